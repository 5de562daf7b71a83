//! Accounts: consumers and companies, their parent–child hierarchy, contact data, consent per
//! channel, tags and custom fields per industry.
//!
//! Rules beyond field formats: a parent account must exist and the hierarchy above an account may
//! not loop back to it nor be deeper than [`MAX_DEPTH`]; at most one account per won deal
//! (ALREADY_EXISTS naming the existing account); an account is only deleted once nothing is left
//! under it (FAILED_PRECONDITION `ACCOUNT_HAS_CHILDREN`).

use kizuna_errors::{ApiError, Validator};
use kizuna_proto::accounts::{Account, account};
use kizuna_proto::types::{Channel, Consent, ConsentState};
use kizuna_store::{Sql, Store, WriteTx, apply_mask, db_error, db_span, parse_parent};
use prost_types::FieldMask;
use sqlx::Row;
use tracing::Instrument;

use crate::error::{Error, Result};
use crate::tables::{Accounts, valid_timestamp};

/// Most ancestors an account may have. The cycle check follows at most this many parents, so it
/// always ends; a new parent whose own hierarchy is already this deep is refused.
pub const MAX_DEPTH: usize = 32;
/// Most tags on an account.
pub const MAX_TAGS: usize = 50;
/// Most custom fields on an account.
pub const MAX_CUSTOM_FIELDS: usize = 50;

/// Whether `key` is a custom field key: 1-64 characters of `a-z`, `0-9` and `_`.
pub fn valid_custom_field_key(key: &str) -> bool {
    (1..=64).contains(&key.len())
        && key
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Whether `value` is a resource name `<collection>/{id}` with a valid id.
fn is_name(value: &str, collection: &str) -> bool {
    parse_parent(value, collection).is_some()
}

/// Checks an account's caller-settable fields (the hierarchy is checked against the database by
/// [`create`] and [`update`]).
pub fn validate(account: &Account) -> Result<(), ApiError> {
    let mut v = Validator::new();
    check(&mut v, account);
    v.finish()
}

fn check(v: &mut Validator, account: &Account) {
    let f = |name: &str| format!("account.{name}");
    v.required_max(&f("display_name"), &account.display_name, 200)
        .max_chars(
            &f("display_name_reading"),
            &account.display_name_reading,
            200,
        );
    let type_known = account::Type::try_from(account.r#type).is_ok();
    v.enum_value(&f("type"), type_known, account.r#type, true);
    if !account.parent_account.is_empty() {
        v.check(
            is_name(&account.parent_account, "accounts"),
            &f("parent_account"),
            "must be an account name like `accounts/{id}`",
        );
        v.check(
            account.parent_account != account.name,
            &f("parent_account"),
            "must not be the account itself",
        );
    }
    v.email(&f("email"), &account.email)
        .phone(&f("phone"), &account.phone)
        .max_chars(&f("phone"), &account.phone, 32);
    v.check(
        account.country_code.is_empty()
            || (account.country_code.len() == 2
                && account.country_code.chars().all(|c| c.is_ascii_uppercase())),
        &f("country_code"),
        "must be an ISO 3166-1 alpha-2 code in upper case, e.g. JP",
    );
    for (name, value, max) in [
        ("region", &account.region, 100),
        ("industry", &account.industry, 100),
        ("owner", &account.owner, 256),
    ] {
        v.max_chars(&f(name), value, max);
    }
    v.check(
        account.lead.is_empty() || is_name(&account.lead, "leads"),
        &f("lead"),
        "must be a lead name like `leads/{id}`",
    );
    v.check(
        account.deal.is_empty() || is_name(&account.deal, "deals"),
        &f("deal"),
        "must be a deal name like `deals/{id}`",
    );
    v.check(
        account.tags.len() <= MAX_TAGS,
        &f("tags"),
        "at most 50 tags",
    );
    for (i, tag) in account.tags.iter().enumerate() {
        v.required_max(&f(&format!("tags[{i}]")), tag, 64);
    }
    v.check(
        account.custom_fields.len() <= MAX_CUSTOM_FIELDS,
        &f("custom_fields"),
        "at most 50 entries",
    );
    for (key, value) in &account.custom_fields {
        if valid_custom_field_key(key) {
            v.max_chars(&f(&format!("custom_fields[{key}]")), value, 1024);
        } else {
            v.violation(
                f("custom_fields"),
                "keys must be 1-64 characters of a-z, 0-9 and _",
            );
        }
    }
    validate_consents(v, &account.consents);
    let channel_known = Channel::try_from(account.preferred_channel).is_ok();
    v.enum_value(
        &f("preferred_channel"),
        channel_known,
        account.preferred_channel,
        false,
    );
}

fn validate_consents(v: &mut Validator, consents: &[Consent]) {
    let mut channels = Vec::new();
    for (i, consent) in consents.iter().enumerate() {
        let f = |name: &str| format!("account.consents[{i}].{name}");
        let channel_ok = Channel::try_from(consent.channel).is_ok();
        v.enum_value(&f("channel"), channel_ok, consent.channel, true);
        let state_ok = ConsentState::try_from(consent.state).is_ok();
        v.enum_value(&f("state"), state_ok, consent.state, true);
        if channels.contains(&consent.channel) {
            v.violation(f("channel"), "appears twice; give one entry per channel");
        }
        channels.push(consent.channel);
        v.max_chars(&f("source"), &consent.source, 200);
        if let Some(time) = &consent.update_time {
            v.check(
                valid_timestamp(time),
                &f("update_time"),
                "is not a valid time",
            );
        }
    }
}

/// Sets `update_time` of each consent that has none, or whose state or source changed while its
/// time was copied unchanged from `previous`, to `now` (the request time).
pub fn stamp_consents(consents: &mut [Consent], previous: &[Consent], now: i64) {
    for consent in consents {
        let before = previous.iter().find(|p| p.channel == consent.channel);
        let changed = before.is_some_and(|p| {
            (p.state != consent.state || p.source != consent.source)
                && p.update_time == consent.update_time
        });
        if consent.update_time.is_none() || changed {
            consent.update_time = Some(kizuna_store::time::to_timestamp(now));
        }
    }
}

/// Clears the output-only fields a caller may have sent and stamps consents.
fn prepare_new(mut account: Account, now: i64) -> Account {
    account.name.clear();
    account.etag.clear();
    account.create_time = None;
    account.update_time = None;
    stamp_consents(&mut account.consents, &[], now);
    account
}

/// Creates an account, refusing a second one for the same deal and a parent that does not exist.
pub async fn create(
    store: &Store,
    account: Account,
    account_id: &str,
    request_id: &str,
) -> Result<Account> {
    let account = prepare_new(account, kizuna_db::now_micros());
    let mut v = Validator::new();
    check(&mut v, &account);
    v.finish()?;
    let deal = account.deal.clone();
    let created = store
        .create_with::<Accounts, Error, _>(
            "",
            account_id,
            account,
            request_id,
            async |tx, account| {
                if let Some(existing) = find_by_deal(tx.conn(), store, &account.deal).await? {
                    return Err(Error::DuplicateDeal {
                        deal: account.deal.clone(),
                        existing,
                    });
                }
                if !account.parent_account.is_empty() {
                    let own = if account_id.is_empty() {
                        String::new()
                    } else {
                        format!("accounts/{account_id}")
                    };
                    check_hierarchy(tx, &own, &account.parent_account).await?;
                }
                Ok(())
            },
        )
        .await;
    match created {
        Err(Error::Api(error @ ApiError::AlreadyExists { .. })) if !deal.is_empty() => {
            // The insert hit a unique index: either the id is taken or a concurrent create for
            // the same deal won the race. Name the deal's account if there is one.
            let mut conn = store.db().acquire().await.map_err(db_error)?;
            match find_by_deal(&mut conn, store, &deal).await? {
                Some(existing) => Err(Error::DuplicateDeal { deal, existing }),
                None => Err(error.into()),
            }
        }
        other => other,
    }
}

/// Applies `patch` under `mask` to the account it names, guarded by its etag. `type`, `lead` and
/// `deal` are immutable.
pub async fn update(store: &Store, patch: Account, mask: Option<&FieldMask>) -> Result<Account> {
    if patch.name.is_empty() {
        return Err(ApiError::invalid("account.name", "is required").into());
    }
    let mut tx = store.begin().await?;
    let mut account = tx.get::<Accounts>(&patch.name).await?;
    kizuna_store::check_etag::<Accounts>(&account, &patch.etag)?;
    let before = account.clone();
    apply_mask!(account, patch, mask, [
        "display_name" => display_name, "display_name_reading" => display_name_reading,
        "parent_account" => parent_account, "email" => email, "phone" => phone,
        "country_code" => country_code, "region" => region, "industry" => industry,
        "tags" => tags, "custom_fields" => custom_fields, "consents" => consents,
        "preferred_channel" => preferred_channel, "owner" => owner,
    ])?;
    stamp_consents(
        &mut account.consents,
        &before.consents,
        kizuna_db::now_micros(),
    );
    validate(&account)?;
    if !account.parent_account.is_empty() && account.parent_account != before.parent_account {
        check_hierarchy(&mut tx, &account.name, &account.parent_account).await?;
    }
    let updated = tx.replace::<Accounts>(account).await?;
    tx.emit::<Accounts>("updated", &updated).await?;
    tx.commit().await?;
    Ok(updated)
}

/// Deletes the account `name` (after the etag check) when no child account, order or case is
/// left under it.
pub async fn delete(store: &Store, name: &str, etag: &str) -> Result<Account> {
    let mut tx = store.begin().await?;
    let current = tx.get::<Accounts>(name).await?;
    kizuna_store::check_etag::<Accounts>(&current, etag)?;
    for (what, table, column) in [
        ("child accounts", "accounts", "parent_account"),
        ("orders", "orders", "parent"),
        ("cases", "cases", "parent"),
    ] {
        let mut sql = Sql::new(format!("SELECT id FROM {table} WHERE {column} = "));
        sql.bind(name).push(" LIMIT 1");
        let span = db_span(tx.db(), "SELECT", table);
        let row = sql
            .query()
            .fetch_optional(tx.conn())
            .instrument(span)
            .await
            .map_err(db_error)?;
        if row.is_some() {
            return Err(Error::AccountHasChildren {
                name: name.to_owned(),
                what,
            });
        }
    }
    tx.remove::<Accounts>(name).await?;
    tx.emit::<Accounts>("deleted", &current).await?;
    tx.commit().await?;
    Ok(current)
}

/// The account created for `deal`, if any (none for an empty deal).
async fn find_by_deal(
    conn: &mut sqlx::AnyConnection,
    store: &Store,
    deal: &str,
) -> Result<Option<String>, ApiError> {
    if deal.is_empty() {
        return Ok(None);
    }
    let mut sql = Sql::new("SELECT id FROM accounts WHERE deal = ");
    sql.bind(deal).push(" AND parent = ").bind("");
    let row = sql
        .query()
        .fetch_optional(conn)
        .instrument(db_span(store.db(), "SELECT", "accounts"))
        .await
        .map_err(db_error)?;
    row.map(|row| {
        row.try_get::<String, _>(0)
            .map(|id| format!("accounts/{id}"))
    })
    .transpose()
    .map_err(db_error)
}

/// Checks that `parent` exists and that following parents upwards from it neither reaches `own`
/// (the account being changed; empty for a new one without an id) nor goes on for more than
/// [`MAX_DEPTH`] accounts. On PostgreSQL the ancestors stay locked until commit, so a concurrent
/// change cannot close a loop behind this check.
async fn check_hierarchy(tx: &mut WriteTx<'_>, own: &str, parent: &str) -> Result<(), ApiError> {
    let field = "account.parent_account";
    let mut current = parent.to_owned();
    for _ in 0..MAX_DEPTH {
        if !own.is_empty() && current == own {
            return Err(ApiError::invalid(
                field,
                format!("`{parent}` is below this account; the hierarchy must not loop"),
            ));
        }
        let ancestor = match tx.get::<Accounts>(&current).await {
            Ok(ancestor) => ancestor,
            Err(ApiError::NotFound { .. }) if current == parent => {
                return Err(ApiError::invalid(
                    field,
                    format!("account `{parent}` does not exist"),
                ));
            }
            Err(ApiError::NotFound { .. }) => {
                return Err(ApiError::Internal(format!(
                    "account hierarchy above {parent} names a missing account {current}"
                )));
            }
            Err(error) => return Err(error),
        };
        if ancestor.parent_account.is_empty() {
            return Ok(());
        }
        current = ancestor.parent_account;
    }
    Err(ApiError::invalid(
        field,
        format!("the hierarchy above `{parent}` is deeper than {MAX_DEPTH} accounts"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> Account {
        Account {
            display_name: "株式会社例".into(),
            r#type: account::Type::Company as i32,
            ..Account::default()
        }
    }

    fn fields(result: Result<(), ApiError>) -> Vec<String> {
        match result {
            Ok(()) => Vec::new(),
            Err(ApiError::InvalidArgument(violations)) => {
                violations.into_iter().map(|v| v.field).collect()
            }
            Err(other) => panic!("unexpected error {other:?}"),
        }
    }

    #[test]
    fn minimal_account_is_valid() {
        assert_eq!(fields(validate(&valid())), Vec::<String>::new());
    }

    #[test]
    fn display_name_and_type_are_required() {
        let account = Account::default();
        assert_eq!(
            fields(validate(&account)),
            ["account.display_name", "account.type"]
        );
        let unknown_type = Account {
            r#type: 9,
            ..valid()
        };
        assert_eq!(fields(validate(&unknown_type)), ["account.type"]);
        let long = Account {
            display_name: "あ".repeat(201),
            ..valid()
        };
        assert_eq!(fields(validate(&long)), ["account.display_name"]);
    }

    #[test]
    fn bad_custom_field_keys_are_refused() {
        for key in ["", "Shoe_Size", "shoe-size", "靴", &"k".repeat(65)] {
            let mut account = valid();
            account.custom_fields.insert(key.to_owned(), "27".into());
            assert_eq!(
                fields(validate(&account)),
                ["account.custom_fields"],
                "{key:?}"
            );
        }
        let mut account = valid();
        account
            .custom_fields
            .insert("shoe_size_2".into(), "27".into());
        account
            .custom_fields
            .insert("favourite_brand".into(), "x".repeat(1025));
        assert_eq!(
            fields(validate(&account)),
            ["account.custom_fields[favourite_brand]"]
        );
    }

    #[test]
    fn too_many_tags_and_fields_are_refused() {
        let mut account = valid();
        account.tags = (0..51).map(|i| format!("t{i}")).collect();
        account.custom_fields = (0..51).map(|i| (format!("f{i}"), String::new())).collect();
        assert_eq!(
            fields(validate(&account)),
            ["account.tags", "account.custom_fields"]
        );
    }

    #[test]
    fn references_and_contacts_are_checked() {
        let account = Account {
            name: "accounts/a".into(),
            parent_account: "accounts/a".into(),
            email: "not-an-email".into(),
            phone: "call me".into(),
            country_code: "jp".into(),
            lead: "deals/1".into(),
            deal: "deals/".into(),
            preferred_channel: 42,
            ..valid()
        };
        assert_eq!(
            fields(validate(&account)),
            [
                "account.parent_account",
                "account.email",
                "account.phone",
                "account.country_code",
                "account.lead",
                "account.deal",
                "account.preferred_channel",
            ]
        );
        let bad_parent = Account {
            parent_account: "accounts/A B".into(),
            ..valid()
        };
        assert_eq!(fields(validate(&bad_parent)), ["account.parent_account"]);
    }

    #[test]
    fn one_consent_per_channel_with_known_values() {
        let consent = |channel: Channel, state: i32| Consent {
            channel: channel as i32,
            state,
            ..Consent::default()
        };
        let account = Account {
            consents: vec![
                consent(Channel::Email, ConsentState::Granted as i32),
                consent(Channel::Email, ConsentState::Denied as i32),
                consent(Channel::Line, 0),
                consent(Channel::Sms, 17),
            ],
            ..valid()
        };
        assert_eq!(
            fields(validate(&account)),
            [
                "account.consents[1].channel",
                "account.consents[2].state",
                "account.consents[3].state",
            ]
        );
    }

    #[test]
    fn consent_times_are_stamped_when_missing_or_stale() {
        let old = Some(kizuna_store::time::to_timestamp(1_000));
        let previous = vec![Consent {
            channel: Channel::Email as i32,
            state: ConsentState::Granted as i32,
            update_time: old,
            ..Consent::default()
        }];
        // Unchanged: keeps its time.
        let mut same = previous.clone();
        stamp_consents(&mut same, &previous, 5_000);
        assert_eq!(same[0].update_time, old);
        // State changed with the old time copied back: stamped.
        let mut changed = previous.clone();
        changed[0].state = ConsentState::Denied as i32;
        stamp_consents(&mut changed, &previous, 5_000);
        assert_eq!(
            changed[0].update_time,
            Some(kizuna_store::time::to_timestamp(5_000))
        );
        // New channel without a time: stamped.
        let mut added = vec![Consent {
            channel: Channel::Line as i32,
            state: ConsentState::Granted as i32,
            ..Consent::default()
        }];
        stamp_consents(&mut added, &previous, 7_000);
        assert_eq!(
            added[0].update_time,
            Some(kizuna_store::time::to_timestamp(7_000))
        );
    }
}
