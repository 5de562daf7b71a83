//! The domain operations against a real database (SQLite and PostgreSQL): the migration, the SQL
//! each module writes itself, and the events each change leaves in the outbox. The end-to-end
//! tests in `tests/` cover the same through the gRPC server.

use kizuna_errors::ApiError;
use kizuna_proto::accounts::{Account, Case, Order, account, case, order};
use kizuna_store::Store;
use kizuna_store::time::from_timestamp;
use kizuna_testing::{Backend, both_backends};
use prost_types::FieldMask;
use sqlx::Row;

use crate::error::Error;
use crate::tables::{Accounts, Orders};
use crate::{accounts, cases, migrations, orders};

async fn fixture(backend: Backend) -> Option<kizuna_testing::TestStore> {
    kizuna_testing::migrated_store(backend, crate::SERVICE, migrations::MIGRATIONS).await
}

async fn event_types(store: &Store) -> Vec<String> {
    sqlx::query("SELECT event_type FROM outbox ORDER BY sequence")
        .fetch_all(store.db().pool())
        .await
        .expect("outbox")
        .iter()
        .map(|row| row.try_get::<String, _>(0).expect("event_type"))
        .collect()
}

fn company(name: &str) -> Account {
    Account {
        display_name: name.into(),
        r#type: account::Type::Company as i32,
        ..Account::default()
    }
}

fn mask(paths: &[&str]) -> FieldMask {
    FieldMask {
        paths: paths.iter().map(|p| (*p).to_owned()).collect(),
    }
}

fn line(quantity: i64, unit_price_minor: i64) -> order::OrderLine {
    order::OrderLine {
        product: "SKU-1".into(),
        quantity,
        unit_price_minor,
        category: "shoes".into(),
    }
}

both_backends!(one_account_per_deal, one_account_per_deal_on);
async fn one_account_per_deal_on(backend: Backend) {
    let Some(f) = fixture(backend).await else {
        return;
    };
    let first = Account {
        deal: "deals/42".into(),
        ..company("例")
    };
    let created = accounts::create(&f.store, first.clone(), "", "")
        .await
        .expect("create");
    let again = accounts::create(&f.store, first, "", "").await;
    match again {
        Err(Error::DuplicateDeal { existing, .. }) => assert_eq!(existing, created.name),
        other => panic!("expected a duplicate deal, got {other:?}"),
    }
    // An over-long idempotency key is refused (by the store) before anything is written.
    let long_key = "r".repeat(101);
    let order = Order {
        currency_code: "JPY".into(),
        line_items: vec![line(1, 100)],
        ..Order::default()
    };
    let case = Case {
        title: "問い合わせ".into(),
        kind: case::Kind::Inquiry as i32,
        ..Case::default()
    };
    let refused = [
        accounts::create(&f.store, company("長"), "", &long_key)
            .await
            .map(|_| ()),
        orders::create(&f.store, &created.name, order, "", &long_key)
            .await
            .map(|_| ()),
        cases::create(&f.store, &created.name, case, "", &long_key)
            .await
            .map(|_| ()),
    ];
    for result in refused {
        match result {
            Err(Error::Api(ApiError::InvalidArgument(violations))) => {
                assert!(
                    violations.iter().any(|v| v.field == "request_id"),
                    "{violations:?}"
                );
            }
            other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
        }
    }
    assert_eq!(event_types(&f.store).await, ["account.created"]);
}

both_backends!(
    hierarchy_has_no_cycles_and_blocks_deletes,
    hierarchy_has_no_cycles_and_blocks_deletes_on
);
async fn hierarchy_has_no_cycles_and_blocks_deletes_on(backend: Backend) {
    let Some(f) = fixture(backend).await else {
        return;
    };
    let s = &f.store;
    let top = accounts::create(s, company("親"), "top", "")
        .await
        .expect("top");
    let child = Account {
        parent_account: top.name.clone(),
        ..company("子")
    };
    let child = accounts::create(s, child, "child", "")
        .await
        .expect("child");
    let missing_parent = Account {
        parent_account: "accounts/nobody".into(),
        ..company("迷子")
    };
    assert!(matches!(
        accounts::create(s, missing_parent, "", "").await,
        Err(Error::Api(ApiError::InvalidArgument(_)))
    ));
    // top under its own child: a loop.
    let patch = Account {
        name: top.name.clone(),
        parent_account: child.name.clone(),
        ..Account::default()
    };
    assert!(matches!(
        accounts::update(s, patch, Some(&mask(&["parent_account"]))).await,
        Err(Error::Api(ApiError::InvalidArgument(_)))
    ));
    // Immutable fields cannot be named.
    let patch = Account {
        name: top.name.clone(),
        r#type: account::Type::Consumer as i32,
        ..Account::default()
    };
    assert!(
        accounts::update(s, patch, Some(&mask(&["type"])))
            .await
            .is_err()
    );
    // A parent with children stays.
    match accounts::delete(s, &top.name, "").await {
        Err(Error::AccountHasChildren { what, .. }) => assert_eq!(what, "child accounts"),
        other => panic!("expected ACCOUNT_HAS_CHILDREN, got {other:?}"),
    }
    accounts::delete(s, &child.name, "")
        .await
        .expect("delete child");
    accounts::delete(s, &top.name, "")
        .await
        .expect("delete top");
    assert_eq!(
        event_types(s).await,
        [
            "account.created",
            "account.created",
            "account.deleted",
            "account.deleted"
        ]
    );
}

both_backends!(
    orders_total_and_are_idempotent_by_external_id,
    orders_total_and_are_idempotent_by_external_id_on
);
async fn orders_total_and_are_idempotent_by_external_id_on(backend: Backend) {
    let Some(f) = fixture(backend).await else {
        return;
    };
    let s = &f.store;
    let account = accounts::create(s, company("店"), "shop", "")
        .await
        .expect("account");
    let new_order = Order {
        external_order_id: "POS-0001".into(),
        currency_code: "JPY".into(),
        line_items: vec![line(2, 1_200), line(1, 800)],
        total: Some(kizuna_proto::types::Money {
            currency_code: "USD".into(),
            amount_minor: 1,
        }),
        ..Order::default()
    };
    let created = orders::create(s, &account.name, new_order.clone(), "", "")
        .await
        .expect("order");
    let total = created.total.clone().expect("total");
    assert_eq!(
        (total.currency_code.as_str(), total.amount_minor),
        ("JPY", 3_200)
    );
    assert_eq!(created.status, order::Status::Placed as i32);
    assert!(created.order_time.is_some());
    // The same external id again: the first order, unchanged, and no second event.
    let changed = Order {
        line_items: vec![line(9, 9)],
        ..new_order
    };
    let again = orders::create(s, &account.name, changed, "", "req-2")
        .await
        .expect("again");
    assert_eq!(again, created);
    // A missing account is NOT_FOUND.
    let lost = Order {
        external_order_id: String::new(),
        currency_code: "JPY".into(),
        line_items: vec![line(1, 1)],
        ..Order::default()
    };
    assert!(matches!(
        orders::create(s, "accounts/nobody", lost, "", "").await,
        Err(Error::Api(ApiError::NotFound { .. }))
    ));
    // Updating the lines recomputes the total; the currency is immutable.
    let patch = Order {
        name: created.name.clone(),
        line_items: vec![line(3, 1_000)],
        ..Order::default()
    };
    let updated = orders::update(s, patch, Some(&mask(&["line_items"])))
        .await
        .expect("update");
    assert_eq!(updated.total.expect("total").amount_minor, 3_000);
    let patch = Order {
        name: created.name.clone(),
        currency_code: "USD".into(),
        ..Order::default()
    };
    assert!(
        orders::update(s, patch, Some(&mask(&["currency_code"])))
            .await
            .is_err()
    );
    // An account with orders is not deleted.
    assert!(matches!(
        accounts::delete(s, &account.name, "").await,
        Err(Error::AccountHasChildren { what: "orders", .. })
    ));
    assert_eq!(
        event_types(s).await,
        ["account.created", "order.created", "order.updated"]
    );
}

both_backends!(
    cases_get_their_sla_and_resolve_once,
    cases_get_their_sla_and_resolve_once_on
);
async fn cases_get_their_sla_and_resolve_once_on(backend: Backend) {
    let Some(f) = fixture(backend).await else {
        return;
    };
    let s = &f.store;
    let account = accounts::create(s, company("客"), "client", "")
        .await
        .expect("account");
    let new_case = Case {
        title: "返品したい".into(),
        kind: case::Kind::Request as i32,
        priority: case::Priority::Urgent as i32,
        ..Case::default()
    };
    let created = cases::create(s, &account.name, new_case, "c1", "req-1")
        .await
        .expect("case");
    let create = from_timestamp(&created.create_time.expect("create_time"));
    let due = from_timestamp(&created.sla_due_time.expect("sla_due_time"));
    assert_eq!(due - create, 4 * 3_600 * 1_000_000);
    assert_eq!(created.state, case::State::Open as i32);
    assert_eq!(created.etag, "1");
    // The stored row carries the derived fields too.
    assert_eq!(
        s.get::<crate::tables::Cases>(&created.name)
            .await
            .expect("get"),
        created
    );
    // Retrying the request answers the first result.
    let retry = Case {
        title: "別物".into(),
        kind: case::Kind::Inquiry as i32,
        ..Case::default()
    };
    assert_eq!(
        cases::create(s, &account.name, retry, "c2", "req-1")
            .await
            .expect("retry"),
        created
    );
    // Resolving needs a resolution.
    let resolve = Case {
        name: created.name.clone(),
        state: case::State::Resolved as i32,
        ..Case::default()
    };
    assert!(matches!(
        cases::update(s, resolve.clone(), Some(&mask(&["state"]))).await,
        Err(Error::Api(ApiError::InvalidArgument(_)))
    ));
    let resolve = Case {
        resolution: "返金済み".into(),
        priority: case::Priority::Low as i32,
        ..resolve
    };
    let resolved = cases::update(
        s,
        resolve,
        Some(&mask(&["state", "resolution", "priority"])),
    )
    .await
    .expect("resolve");
    assert!(resolved.resolve_time.is_some());
    let due = from_timestamp(&resolved.sla_due_time.expect("sla_due_time"));
    assert_eq!(due - create, 168 * 3_600 * 1_000_000);
    // Closing a resolved case is no second resolution.
    let close = Case {
        name: created.name.clone(),
        state: case::State::Closed as i32,
        ..Case::default()
    };
    let closed = cases::update(s, close, Some(&mask(&["state"])))
        .await
        .expect("close");
    assert_eq!(closed.resolve_time, resolved.resolve_time);
    // The SLA is output-only.
    let patch = Case {
        name: created.name.clone(),
        ..Case::default()
    };
    assert!(
        cases::update(s, patch, Some(&mask(&["sla_due_time"])))
            .await
            .is_err()
    );
    assert_eq!(
        event_types(s).await,
        [
            "account.created",
            "case.created",
            "case.updated",
            "case.resolved",
            "case.updated"
        ]
    );
}

both_backends!(
    lists_default_to_the_newest_and_take_enum_prefixes,
    lists_default_to_the_newest_and_take_enum_prefixes_on
);
async fn lists_default_to_the_newest_and_take_enum_prefixes_on(backend: Backend) {
    let Some(f) = fixture(backend).await else {
        return;
    };
    let s = &f.store;
    let account = accounts::create(s, company("店"), "shop", "")
        .await
        .expect("account");
    // Recorded first but placed later: orders list by order time, newest first.
    let hour = 3_600_000_000;
    let now = kizuna_db::now_micros();
    let mut names = Vec::new();
    for (external, placed) in [("POS-1", now - hour), ("POS-2", now - 2 * hour)] {
        let order = Order {
            external_order_id: external.into(),
            currency_code: "JPY".into(),
            line_items: vec![line(1, 100)],
            order_time: Some(kizuna_store::time::to_timestamp(placed)),
            ..Order::default()
        };
        let created = orders::create(s, &account.name, order, "", "")
            .await
            .expect("order");
        names.push(created.name);
    }
    let list = |filter: &str, order_by: &str| kizuna_store::ListQuery {
        parent: account.name.clone(),
        filter: filter.into(),
        order_by: order_by.into(),
        ..kizuna_store::ListQuery::default()
    };
    let listed = |page: kizuna_store::Page<Order>| -> Vec<String> {
        page.items.into_iter().map(|o| o.name).collect()
    };
    let default = s.list::<Orders>(&list("", " ")).await.expect("list");
    assert_eq!(listed(default), names);
    let by_create = s
        .list::<Orders>(&list("", "create_time desc"))
        .await
        .expect("list");
    assert_eq!(listed(by_create), [names[1].clone(), names[0].clone()]);
    // Enum values are accepted with or without their prefix.
    for filter in ["status = PLACED", "status = STATUS_PLACED"] {
        let page = s.list::<Orders>(&list(filter, "")).await.expect(filter);
        assert_eq!(page.items.len(), 2, "{filter}");
    }
    let companies = s
        .list::<Accounts>(&kizuna_store::ListQuery {
            filter: "type = TYPE_COMPANY".into(),
            ..kizuna_store::ListQuery::default()
        })
        .await
        .expect("accounts");
    assert_eq!(companies.items.len(), 1);
    // The contract's length limits.
    let too_long = s
        .list::<Orders>(&list(&"x".repeat(2001), &"y".repeat(201)))
        .await;
    match too_long {
        Err(ApiError::InvalidArgument(violations)) => assert_eq!(
            violations
                .iter()
                .map(|v| v.field.as_str())
                .collect::<Vec<_>>(),
            ["filter", "order_by"]
        ),
        other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
    }
}
