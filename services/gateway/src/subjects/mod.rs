//! Subjects: one person (or company) across MA, SFA and CRM, linking a lead, its deals and its
//! account; and Customer 360, the subject with those records read from their services.

use futures::StreamExt;
use kizuna_errors::{ApiError, Validator};
use kizuna_proto::gateway::{ListSubjectsRequest, Subject, SubjectView};
use kizuna_proto::types::LifecycleStage;
use kizuna_store::{Page, Store, WriteTx, apply_mask, list_query, parse_parent};
use prost_types::FieldMask;

use crate::error::{Error, Result};
use crate::tables::{Subjects, Transitions};
use crate::upstream::{CallContext, Upstreams};

/// Most deals one subject may link.
pub const MAX_DEALS: usize = 100;
/// Most deals read from the deals service at once for one Customer 360.
pub const DEAL_FETCH_CONCURRENCY: usize = 16;
/// The `missing_parts` entry when the lead could not be read.
pub const MISSING_LEAD: &str = "leads";
/// The `missing_parts` entry when the account could not be read.
pub const MISSING_ACCOUNT: &str = "accounts";

/// The method `Store::create_with` records subject creates under (`Create` + the kind).
const CREATE_METHOD: &str = "CreateSubject";

/// Checks that `value`, when present, names a resource of `collection` (`leads/{id}`, ids of
/// a-z, 0-9 and -).
fn link(v: &mut Validator, field: &str, value: &str, collection: &str) {
    if !value.is_empty() && parse_parent(value, collection).is_none() {
        v.violation(
            field,
            format!("must be a resource name like `{collection}/{{id}}` (ids: a-z, 0-9, -)"),
        );
    }
}

/// Checks a subject's caller-settable fields; `prefix` is the request field (`subject`).
/// The stage must already be set (creates default it to LEAD first).
pub fn validate(subject: &Subject, prefix: &str) -> Result<(), ApiError> {
    let mut v = Validator::new();
    let f = |name: &str| format!("{prefix}.{name}");
    if subject.lead.is_empty()
        && subject.account.is_empty()
        && subject.email.trim().is_empty()
        && subject.phone.trim().is_empty()
    {
        v.violation(
            prefix,
            "one of lead, account, email or phone is required to identify the subject",
        );
    }
    v.max_chars(&f("display_name"), &subject.display_name, 200)
        .email(&f("email"), &subject.email)
        .phone(&f("phone"), &subject.phone)
        .max_chars(&f("phone"), &subject.phone, 32);
    link(&mut v, &f("lead"), &subject.lead, "leads");
    link(&mut v, &f("account"), &subject.account, "accounts");
    if subject.deals.len() > MAX_DEALS {
        v.violation(f("deals"), format!("at most {MAX_DEALS} deals"));
    } else {
        for (i, deal) in subject.deals.iter().enumerate() {
            let field = f(&format!("deals[{i}]"));
            if deal.is_empty() {
                v.violation(&field, "is required (an empty deal name)");
            }
            link(&mut v, &field, deal, "deals");
            if subject.deals[..i].contains(deal) {
                v.violation(&field, "appears twice; list each deal once");
            }
        }
    }
    let known = LifecycleStage::try_from(subject.stage).is_ok();
    v.enum_value(&f("stage"), known, subject.stage, true);
    v.finish()
}

/// Clears the output-only fields a caller may have sent and defaults the stage to LEAD.
fn prepare_new(mut subject: Subject) -> Subject {
    subject.name.clear();
    subject.etag.clear();
    subject.create_time = None;
    subject.update_time = None;
    clear_records(&mut subject);
    if subject.stage == LifecycleStage::Unspecified as i32 {
        subject.stage = LifecycleStage::Lead as i32;
    }
    subject
}

/// Removes the Customer 360 parts, which are never stored.
fn clear_records(subject: &mut Subject) {
    subject.lead_record = None;
    subject.deal_records.clear();
    subject.account_record = None;
    subject.missing_parts.clear();
}

/// Creates a subject, idempotently for `request_id`, refusing a second subject for the same
/// lead or account (ALREADY_EXISTS naming the existing subject).
pub async fn create(
    store: &Store,
    subject: Subject,
    subject_id: &str,
    request_id: &str,
) -> Result<Subject> {
    let subject = prepare_new(subject);
    validate(&subject, "subject")?;
    let created = store
        .create_with::<Subjects, Error, _>(
            "",
            subject_id,
            subject.clone(),
            request_id,
            async |tx, subject| {
                let db = tx.db().clone();
                match find_duplicate(tx.conn(), &db, subject, "").await? {
                    Some((key, existing)) => Err(Error::DuplicateSubject { key, existing }),
                    None => Ok(()),
                }
            },
        )
        .await;
    match created {
        Err(Error::Api(error @ ApiError::AlreadyExists { .. })) => {
            // A concurrent create won a unique index (its id, lead or account) after our look-up;
            // the transaction is spoiled, so explain the conflict from a fresh connection.
            resolve_conflict(store, &subject, request_id, error).await
        }
        other => other,
    }
}

/// Answers a create whose insert hit a unique index: with the first answer when a concurrent
/// retry of the same request committed, with the subject holding the lead or account when
/// there is one, else with `error` (the id is taken).
async fn resolve_conflict(
    store: &Store,
    subject: &Subject,
    request_id: &str,
    error: ApiError,
) -> Result<Subject> {
    if let Some(previous) = store.recall::<Subjects>(CREATE_METHOD, request_id).await? {
        return Ok(previous);
    }
    Err(explain_duplicate(store, subject, "", error).await)
}

/// The subject other than `except_name` that holds `subject`'s lead or account, read on a fresh
/// connection after a unique index refused a write; `error` when there is none.
async fn explain_duplicate(
    store: &Store,
    subject: &Subject,
    except_name: &str,
    error: ApiError,
) -> Error {
    let mut conn = match store.db().acquire().await {
        Ok(conn) => conn,
        Err(e) => return kizuna_store::db_error(e).into(),
    };
    match find_duplicate(&mut conn, store.db(), subject, except_name).await {
        Ok(Some((key, existing))) => Error::DuplicateSubject { key, existing },
        Ok(None) => error.into(),
        Err(e) => e,
    }
}

/// Applies `patch` under `mask` to the subject it names, guarded by its etag.
pub async fn update(store: &Store, patch: Subject, mask: Option<&FieldMask>) -> Result<Subject> {
    kizuna_store::require_name::<Subjects>(&patch.name, "subject.name")?;
    let mut tx = store.begin().await?;
    let mut subject = tx.get::<Subjects>(&patch.name).await?;
    kizuna_store::check_etag::<Subjects>(&subject, &patch.etag)?;
    apply_mask!(subject, patch, mask, [
        "display_name" => display_name, "email" => email, "phone" => phone, "lead" => lead,
        "deals" => deals, "account" => account, "stage" => stage,
    ])?;
    clear_records(&mut subject);
    validate(&subject, "subject")?;
    let db = tx.db().clone();
    if let Some((key, existing)) = find_duplicate(tx.conn(), &db, &subject, &subject.name).await? {
        return Err(Error::DuplicateSubject { key, existing });
    }
    let updated = match tx.replace::<Subjects>(subject.clone()).await {
        Ok(updated) => updated,
        Err(error @ ApiError::AlreadyExists { .. }) => {
            // A concurrent write linked the same lead or account after our look-up.
            drop(tx);
            return Err(explain_duplicate(store, &subject, &subject.name, error).await);
        }
        Err(other) => return Err(other.into()),
    };
    tx.emit::<Subjects>("updated", &updated).await?;
    tx.commit().await?;
    Ok(updated)
}

/// Deletes a subject (guarded by its etag) together with its recorded transitions.
pub async fn delete(store: &Store, name: &str, etag: &str) -> Result<()> {
    let mut tx = store.begin().await?;
    let current = tx.get::<Subjects>(name).await?;
    kizuna_store::check_etag::<Subjects>(&current, etag)?;
    remove_transitions(&mut tx, name).await?;
    tx.remove::<Subjects>(name).await?;
    tx.emit::<Subjects>("deleted", &current).await?;
    tx.commit().await?;
    Ok(())
}

async fn remove_transitions(tx: &mut WriteTx<'_>, subject: &str) -> Result<()> {
    let mut sql = kizuna_store::Sql::new(format!(
        "DELETE FROM {} WHERE parent = ",
        <Transitions as kizuna_store::Table>::TABLE
    ));
    sql.bind(subject);
    sql.query()
        .execute(tx.conn())
        .await
        .map_err(kizuna_store::db_error)?;
    Ok(())
}

/// The first other subject linking the same lead or account as `subject`.
async fn find_duplicate(
    conn: &mut sqlx::AnyConnection,
    db: &kizuna_db::Database,
    subject: &Subject,
    except_name: &str,
) -> Result<Option<(&'static str, String)>> {
    for key in ["lead", "account"] {
        let value = if key == "lead" {
            &subject.lead
        } else {
            &subject.account
        };
        if let Some(existing) =
            kizuna_store::find_other::<Subjects>(&mut *conn, db, key, value, except_name).await?
        {
            return Ok(Some((key, existing)));
        }
    }
    Ok(None)
}

/// Lists stored subjects (never with Customer 360 parts).
pub async fn list(store: &Store, request: ListSubjectsRequest) -> Result<Page<Subject>> {
    let query = list_query!(request);
    Ok(store.list::<Subjects>(&query).await?)
}

/// Reads a subject; with `SUBJECT_VIEW_FULL` also its lead, deals and account (Customer 360).
pub async fn get(
    store: &Store,
    upstreams: &Upstreams,
    call: &CallContext,
    name: &str,
    view: i32,
) -> Result<Subject> {
    let view = SubjectView::try_from(view).map_err(|_| {
        ApiError::invalid(
            "view",
            format!("unknown value {view}; use SUBJECT_VIEW_BASIC or SUBJECT_VIEW_FULL"),
        )
    })?;
    let subject = store.get::<Subjects>(name).await?;
    Ok(match view {
        SubjectView::Full => customer_360(upstreams, call, subject).await,
        SubjectView::Unspecified | SubjectView::Basic => subject,
    })
}

/// Fills the Customer 360 parts of `subject`, reading the lead, the deals and the account at the
/// same time. A part that cannot be read (service down, deadline passed, record gone, access
/// refused) is named in `missing_parts` instead of failing the call: `leads`, `accounts`, or
/// the name of each deal (`deals/42`).
pub async fn customer_360(
    upstreams: &Upstreams,
    call: &CallContext,
    mut subject: Subject,
) -> Subject {
    clear_records(&mut subject);
    let lead = async {
        if subject.lead.is_empty() {
            return None;
        }
        Some(upstreams.get_lead(call, &subject.lead).await)
    };
    let account = async {
        if subject.account.is_empty() {
            return None;
        }
        Some(upstreams.get_account(call, &subject.account).await)
    };
    // Owned names: borrowed ones trip the higher-ranked lifetime check of `Send` futures.
    let deals = futures::stream::iter(subject.deals.clone())
        .map(|name| async move {
            let result = upstreams.get_deal(call, &name).await;
            (name, result)
        })
        .buffered(DEAL_FETCH_CONCURRENCY)
        .collect::<Vec<_>>();
    let (lead, deals, account) = futures::join!(lead, deals, account);

    let mut missing = Vec::new();
    let mut note = |part: String, status: &tonic::Status| {
        tracing::warn!(
            part = %part,
            code = kizuna_server::layer::code_name(status.code()),
            message = status.message(),
            "customer 360 part missing"
        );
        missing.push(part);
    };
    let lead_record = match lead {
        Some(Ok(record)) => Some(record),
        Some(Err(status)) => {
            note(MISSING_LEAD.to_owned(), &status);
            None
        }
        None => None,
    };
    let mut deal_records = Vec::with_capacity(deals.len());
    for (name, result) in deals {
        match result {
            Ok(record) => deal_records.push(record),
            Err(status) => note(name, &status),
        }
    }
    let account_record = match account {
        Some(Ok(record)) => Some(record),
        Some(Err(status)) => {
            note(MISSING_ACCOUNT.to_owned(), &status);
            None
        }
        None => None,
    };
    subject.lead_record = lead_record;
    subject.deal_records = deal_records;
    subject.account_record = account_record;
    subject.missing_parts = missing;
    subject
}

#[cfg(test)]
mod tests;
