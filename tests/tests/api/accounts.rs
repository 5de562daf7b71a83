//! Accounts: accounts, orders (idempotent by external order id) and cases, with bad input refused.

use kizuna_proto::accounts::*;
use kizuna_tests::{Backend, Suite, both_backends, violated_fields};
use prost_types::FieldMask;
use tonic::Code;

async fn accounts_orders_and_cases(backend: Backend) {
    let Some(suite) = Suite::start(backend).await else {
        return;
    };
    let mut client = suite.accounts().await;
    let company = Account {
        display_name: "絆商事株式会社".into(),
        r#type: account::Type::Company as i32,
        email: "info@kizuna.example.jp".into(),
        ..Default::default()
    };

    let bad_accounts: Vec<(&str, Account, &str)> = vec![
        (
            "no name",
            Account {
                display_name: String::new(),
                ..company.clone()
            },
            "account.display_name",
        ),
        (
            "no type",
            Account {
                r#type: 0,
                ..company.clone()
            },
            "account.type",
        ),
        (
            "unknown type",
            Account {
                r#type: 42,
                ..company.clone()
            },
            "account.type",
        ),
        (
            "bad custom field key",
            Account {
                custom_fields: [("Insurance Card".to_owned(), "x".to_owned())].into(),
                ..company.clone()
            },
            "account.custom_fields",
        ),
        (
            "missing parent",
            Account {
                parent_account: "accounts/nope".into(),
                ..company.clone()
            },
            "account.parent_account",
        ),
    ];
    for (what, bad, field) in bad_accounts {
        let error = client
            .create_account(CreateAccountRequest {
                account: Some(bad),
                ..Default::default()
            })
            .await
            .expect_err(what);
        assert_eq!(error.code(), Code::InvalidArgument, "{what}: {error:?}");
        assert!(
            violated_fields(&error).iter().any(|f| f.starts_with(field)),
            "{what}: {:?}",
            violated_fields(&error)
        );
    }
    let none = client
        .list_accounts(ListAccountsRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert!(none.accounts.is_empty());

    let account = client
        .create_account(CreateAccountRequest {
            account: Some(company),
            ..Default::default()
        })
        .await
        .expect("account")
        .into_inner();

    let order = Order {
        external_order_id: "EC-1001".into(),
        currency_code: "JPY".into(),
        line_items: vec![
            order::OrderLine {
                product: "shampoo".into(),
                quantity: 2,
                unit_price_minor: 1_800,
                ..Default::default()
            },
            order::OrderLine {
                product: "conditioner".into(),
                quantity: 1,
                unit_price_minor: 2_000,
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    let bad_orders: Vec<(&str, Order, &str)> = vec![
        (
            "lower-case currency",
            Order {
                currency_code: "jpy".into(),
                ..order.clone()
            },
            "order.currency_code",
        ),
        (
            "no lines",
            Order {
                line_items: vec![],
                ..order.clone()
            },
            "order.line_items",
        ),
        (
            "zero quantity",
            Order {
                line_items: vec![order::OrderLine {
                    product: "x".into(),
                    quantity: 0,
                    ..Default::default()
                }],
                ..order.clone()
            },
            "order.line_items[0].quantity",
        ),
    ];
    for (what, bad, field) in bad_orders {
        let error = client
            .create_order(CreateOrderRequest {
                parent: account.name.clone(),
                order: Some(bad),
                ..Default::default()
            })
            .await
            .expect_err(what);
        assert_eq!(error.code(), Code::InvalidArgument, "{what}");
        assert!(
            violated_fields(&error).iter().any(|f| f == field),
            "{what}: {:?}",
            violated_fields(&error)
        );
    }
    let first = client
        .create_order(CreateOrderRequest {
            parent: account.name.clone(),
            order: Some(order.clone()),
            ..Default::default()
        })
        .await
        .expect("order")
        .into_inner();
    assert_eq!(
        first.total.as_ref().map(|m| m.amount_minor),
        Some(2 * 1_800 + 2_000)
    );
    let again = client
        .create_order(CreateOrderRequest {
            parent: account.name.clone(),
            order: Some(order),
            ..Default::default()
        })
        .await
        .expect("same external order id")
        .into_inner();
    assert_eq!(again, first, "an order is idempotent by its external id");
    let orders = client
        .list_orders(ListOrdersRequest {
            parent: account.name.clone(),
            ..Default::default()
        })
        .await
        .expect("orders")
        .into_inner();
    assert_eq!(orders.orders.len(), 1);

    let complaint = Case {
        title: "Damaged bottle".into(),
        kind: case::Kind::Complaint as i32,
        priority: case::Priority::High as i32,
        ..Default::default()
    };
    let no_title = client
        .create_case(CreateCaseRequest {
            parent: account.name.clone(),
            r#case: Some(Case {
                title: String::new(),
                ..complaint.clone()
            }),
            ..Default::default()
        })
        .await
        .expect_err("no title");
    assert_eq!(violated_fields(&no_title), ["case.title"]);
    let opened = client
        .create_case(CreateCaseRequest {
            parent: account.name.clone(),
            r#case: Some(complaint),
            ..Default::default()
        })
        .await
        .expect("case")
        .into_inner();
    let due = opened.sla_due_time.expect("SLA due time");
    let created = opened.create_time.expect("create time");
    assert_eq!(
        due.seconds - created.seconds,
        24 * 3600,
        "HIGH priority: 24 h SLA"
    );

    let mask = Some(FieldMask {
        paths: vec!["state".into()],
    });
    let unresolved = client
        .update_case(UpdateCaseRequest {
            r#case: Some(Case {
                name: opened.name.clone(),
                state: case::State::Resolved as i32,
                ..Default::default()
            }),
            update_mask: mask,
        })
        .await
        .expect_err("resolution required");
    assert_eq!(unresolved.code(), Code::InvalidArgument);
    assert!(
        violated_fields(&unresolved)
            .iter()
            .any(|f| f == "case.resolution"),
        "{:?}",
        violated_fields(&unresolved)
    );

    let has_children = client
        .delete_account(DeleteAccountRequest {
            name: account.name.clone(),
            etag: String::new(),
        })
        .await
        .expect_err("orders and cases remain");
    assert_eq!(has_children.code(), Code::FailedPrecondition);
    suite.stop().await;
}
both_backends!(crm, accounts_orders_and_cases);
