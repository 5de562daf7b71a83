//! Support cases: inquiries, complaints, requests and incidents of an account, with an SLA due
//! time from their priority and a resolution.
//!
//! `sla_due_time` is output-only: the case's create time plus its priority's SLA
//! ([`SLA_URGENT_HOURS`] .. [`SLA_LOW_HOURS`]), recomputed when the priority changes. Moving a
//! case to RESOLVED or CLOSED needs a resolution and sets `resolve_time` (to the request time
//! unless the caller gives one); moving it back to OPEN or PENDING clears `resolve_time`. Each
//! move into RESOLVED or CLOSED emits `case.resolved` besides `case.created` / `case.updated`,
//! in the same transaction.

use kizuna_errors::{ApiError, Validator};
use kizuna_proto::accounts::Case;
use kizuna_proto::accounts::case::{Kind, Priority, State};
use kizuna_proto::types::Channel;
use kizuna_store::time::{from_timestamp, to_timestamp};
use kizuna_store::{
    Sql, Store, Table, Value, WriteTx, apply_mask, db_error, db_span, parse_name, parse_parent,
};
use prost::Message;
use prost_types::FieldMask;
use tracing::Instrument;

use crate::error::Result;
use crate::tables::{Accounts, Cases, valid_timestamp};

/// Hours to resolve an urgent case.
pub const SLA_URGENT_HOURS: i64 = 4;
/// Hours to resolve a high-priority case.
pub const SLA_HIGH_HOURS: i64 = 24;
/// Hours to resolve a normal case (3 days).
pub const SLA_NORMAL_HOURS: i64 = 72;
/// Hours to resolve a low-priority case (7 days).
pub const SLA_LOW_HOURS: i64 = 168;

const MICROS_PER_HOUR: i64 = 3_600 * 1_000_000;

/// The SLA of `priority` in hours; `None` for UNSPECIFIED or an unknown value.
pub fn sla_hours(priority: i32) -> Option<i64> {
    match Priority::try_from(priority).ok()? {
        Priority::Urgent => Some(SLA_URGENT_HOURS),
        Priority::High => Some(SLA_HIGH_HOURS),
        Priority::Normal => Some(SLA_NORMAL_HOURS),
        Priority::Low => Some(SLA_LOW_HOURS),
        Priority::Unspecified => None,
    }
}

/// When a case created at `create_micros` with `priority` is due, in microseconds.
pub fn sla_due_micros(create_micros: i64, priority: i32) -> Option<i64> {
    sla_hours(priority)?
        .checked_mul(MICROS_PER_HOUR)
        .and_then(|sla| create_micros.checked_add(sla))
}

/// Whether `state` counts as resolved (RESOLVED or CLOSED).
pub fn is_resolved(state: i32) -> bool {
    state == State::Resolved as i32 || state == State::Closed as i32
}

/// Checks a case's caller-settable fields (after the create defaults are filled in).
pub fn validate(case: &Case) -> Result<(), ApiError> {
    let mut v = Validator::new();
    check(&mut v, case);
    v.finish()
}

fn check(v: &mut Validator, case: &Case) {
    let f = |name: &str| format!("case.{name}");
    v.required_max(&f("title"), &case.title, 200)
        .max_chars(&f("description"), &case.description, 10_000)
        .max_chars(&f("resolution"), &case.resolution, 10_000)
        .max_chars(&f("owner"), &case.owner, 256);
    let kind_known = Kind::try_from(case.kind).is_ok();
    v.enum_value(&f("kind"), kind_known, case.kind, true);
    let priority_known = Priority::try_from(case.priority).is_ok();
    v.enum_value(&f("priority"), priority_known, case.priority, true);
    let state_known = State::try_from(case.state).is_ok();
    v.enum_value(&f("state"), state_known, case.state, true);
    let channel_known = Channel::try_from(case.channel).is_ok();
    v.enum_value(&f("channel"), channel_known, case.channel, false);
    if is_resolved(case.state) {
        v.check(
            !case.resolution.trim().is_empty(),
            &f("resolution"),
            "is required when the case is resolved or closed",
        );
    }
    if let Some(time) = &case.resolve_time {
        v.check(
            valid_timestamp(time),
            &f("resolve_time"),
            "is not a valid time",
        );
    }
}

/// Keeps `resolve_time` in step with the state: set (to `now` when empty) while resolved,
/// cleared otherwise.
fn settle_resolution(case: &mut Case, now: i64) {
    if !is_resolved(case.state) {
        case.resolve_time = None;
    } else if case.resolve_time.is_none() {
        case.resolve_time = Some(to_timestamp(now));
    }
}

/// Sets the output-only `sla_due_time` from the create time and priority.
fn set_sla(case: &mut Case, create_micros: i64) {
    case.sla_due_time = sla_due_micros(create_micros, case.priority).map(to_timestamp);
}

/// Clears the output-only fields a caller may have sent and fills the defaults: normal
/// priority, open.
fn prepare_new(mut case: Case) -> Case {
    case.name.clear();
    case.etag.clear();
    case.create_time = None;
    case.update_time = None;
    case.sla_due_time = None;
    if case.priority == Priority::Unspecified as i32 {
        case.priority = Priority::Normal as i32;
    }
    if case.state == State::Unspecified as i32 {
        case.state = State::Open as i32;
    }
    if !is_resolved(case.state) {
        case.resolve_time = None;
    }
    case
}

/// Opens a case for the account `parent`; the account must exist.
pub async fn create(
    store: &Store,
    parent: &str,
    case: Case,
    case_id: &str,
    request_id: &str,
) -> Result<Case> {
    let case = prepare_new(case);
    let mut v = Validator::new();
    v.required("parent", parent);
    v.check(
        parent.is_empty() || parse_parent(parent, "accounts").is_some(),
        "parent",
        "must be an account name like `accounts/{id}`",
    );
    check(&mut v, &case);
    v.finish()?;
    // Not `Store::create_with`: the SLA counts from the create time the insert sets, so it is
    // derived and stored after the insert, and a case recorded as resolved emits `case.resolved`.
    let method = "CreateCase";
    store
        .idempotent(method, request_id, async |tx| {
            // The account must exist (and, on PostgreSQL, stays locked against a concurrent delete).
            tx.get::<Accounts>(parent).await?;
            let mut created = tx.insert::<Cases>(parent, case_id, case).await?;
            // The SLA (and a resolve time for a case recorded as resolved) count from the create time
            // the store just set, so derive them now and store them in the same row.
            let create_micros = created
                .create_time
                .as_ref()
                .map(from_timestamp)
                .unwrap_or_else(kizuna_db::now_micros);
            set_sla(&mut created, create_micros);
            settle_resolution(&mut created, create_micros);
            store_derived(tx, &created).await?;
            tx.emit::<Cases>("created", &created).await?;
            if is_resolved(created.state) {
                tx.emit::<Cases>("resolved", &created).await?;
            }
            Ok(created)
        })
        .await
}

/// Applies `patch` under `mask` to the case it names, guarded by its etag; keeps the SLA and the
/// resolve time in step and emits `case.resolved` when the case moves into RESOLVED or CLOSED.
pub async fn update(store: &Store, patch: Case, mask: Option<&FieldMask>) -> Result<Case> {
    if patch.name.is_empty() {
        return Err(ApiError::invalid("case.name", "is required").into());
    }
    let mut tx = store.begin().await?;
    let mut case = tx.get::<Cases>(&patch.name).await?;
    kizuna_store::check_etag::<Cases>(&case, &patch.etag)?;
    let was_resolved = is_resolved(case.state);
    apply_mask!(case, patch, mask, [
        "title" => title, "description" => description, "kind" => kind,
        "priority" => priority, "state" => state, "channel" => channel,
        "resolution" => resolution, "resolve_time" => resolve_time, "owner" => owner,
    ])?;
    validate(&case)?;
    let now = kizuna_db::now_micros();
    settle_resolution(&mut case, now);
    let create_micros = case.create_time.as_ref().map_or(now, from_timestamp);
    set_sla(&mut case, create_micros);
    let resolved = !was_resolved && is_resolved(case.state);
    let updated = tx.replace::<Cases>(case).await?;
    tx.emit::<Cases>("updated", &updated).await?;
    if resolved {
        tx.emit::<Cases>("resolved", &updated).await?;
    }
    tx.commit().await?;
    Ok(updated)
}

/// Rewrites the just-inserted row of `case` with its derived fields, keeping its version.
async fn store_derived(tx: &mut WriteTx<'_>, case: &Case) -> Result<(), ApiError> {
    let parsed = parse_name::<Cases>(&case.name)
        .ok_or_else(|| ApiError::Internal(format!("stored case has a bad name {}", case.name)))?;
    let mut sql = Sql::new("UPDATE cases SET data = ");
    sql.bind(Value::Bytes(case.encode_to_vec()));
    for (column, value) in Cases::COLUMNS.iter().zip(Cases::values(case)) {
        sql.push(", ").push(column.sql).push(" = ").bind(value);
    }
    sql.push(" WHERE id = ")
        .bind(parsed.id)
        .push(" AND parent = ")
        .bind(parsed.parent);
    let span = db_span(tx.db(), "UPDATE", "cases");
    sql.query()
        .execute(tx.conn())
        .instrument(span)
        .await
        .map_err(db_error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = MICROS_PER_HOUR;
    const T0: i64 = 1_780_000_000_000_000;

    fn valid() -> Case {
        prepare_new(Case {
            title: "届いた商品が壊れていた".into(),
            kind: Kind::Complaint as i32,
            ..Case::default()
        })
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
    fn sla_due_time_follows_priority() {
        for (priority, hours) in [
            (Priority::Urgent, 4),
            (Priority::High, 24),
            (Priority::Normal, 72),
            (Priority::Low, 168),
        ] {
            let mut case = Case {
                priority: priority as i32,
                ..valid()
            };
            set_sla(&mut case, T0);
            assert_eq!(
                case.sla_due_time,
                Some(to_timestamp(T0 + hours * HOUR)),
                "{priority:?}"
            );
        }
        assert_eq!(sla_due_micros(T0, Priority::Unspecified as i32), None);
        assert_eq!(sla_due_micros(T0, 77), None);
        assert_eq!(sla_due_micros(i64::MAX, Priority::Low as i32), None);
    }

    #[test]
    fn defaults_are_normal_and_open() {
        let case = valid();
        assert_eq!(case.priority, Priority::Normal as i32);
        assert_eq!(case.state, State::Open as i32);
        assert_eq!(fields(validate(&case)), Vec::<String>::new());
    }

    #[test]
    fn resolving_without_a_resolution_is_refused() {
        for state in [State::Resolved, State::Closed] {
            let mut case = Case {
                state: state as i32,
                ..valid()
            };
            assert_eq!(fields(validate(&case)), ["case.resolution"], "{state:?}");
            case.resolution = "  ".into();
            assert_eq!(fields(validate(&case)), ["case.resolution"], "{state:?}");
            case.resolution = "交換品を発送".into();
            assert_eq!(fields(validate(&case)), Vec::<String>::new(), "{state:?}");
        }
        // Open and pending cases need none.
        let pending = Case {
            state: State::Pending as i32,
            ..valid()
        };
        assert_eq!(fields(validate(&pending)), Vec::<String>::new());
    }

    #[test]
    fn resolve_time_is_set_once_and_cleared_on_reopen() {
        let mut case = Case {
            state: State::Resolved as i32,
            resolution: "done".into(),
            ..valid()
        };
        settle_resolution(&mut case, T0);
        assert_eq!(case.resolve_time, Some(to_timestamp(T0)));
        // Closing later keeps the time it was resolved.
        case.state = State::Closed as i32;
        settle_resolution(&mut case, T0 + HOUR);
        assert_eq!(case.resolve_time, Some(to_timestamp(T0)));
        // Reopening clears it; resolving again sets it anew.
        case.state = State::Open as i32;
        settle_resolution(&mut case, T0 + 2 * HOUR);
        assert_eq!(case.resolve_time, None);
        case.state = State::Resolved as i32;
        settle_resolution(&mut case, T0 + 3 * HOUR);
        assert_eq!(case.resolve_time, Some(to_timestamp(T0 + 3 * HOUR)));
    }

    #[test]
    fn required_and_known_fields() {
        let case = Case {
            title: String::new(),
            description: "x".repeat(10_001),
            kind: Kind::Unspecified as i32,
            priority: 9,
            state: 9,
            channel: 99,
            ..Case::default()
        };
        assert_eq!(
            fields(validate(&case)),
            [
                "case.title",
                "case.description",
                "case.kind",
                "case.priority",
                "case.state",
                "case.channel",
            ]
        );
    }
}
