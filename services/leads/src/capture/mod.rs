//! Lead capture: validation, duplicate detection on normalized keys, and updates.

use kizuna_errors::{ApiError, Validator};
use kizuna_proto::leads::{CaptureLeadResponse, CaptureOutcome, Lead};
use kizuna_proto::types::{Channel, ConsentState, LifecycleStage};
use kizuna_store::{LeaseSettings, Store, Worker, WriteTx, apply_mask};
use prost_types::FieldMask;

use crate::error::{Error, Result};

pub mod import;
pub mod merge;
pub mod redirects;

pub use redirects::LiveLead;
pub mod rules;

use crate::tables::Leads;
pub use import::import;
use kizuna_normalize::{email_key, phone_key};
pub use merge::merge;

/// Checks a lead's caller-settable fields; `prefix` is the request field (`lead`).
pub fn validate(lead: &Lead, prefix: &str) -> Result<(), ApiError> {
    let mut v = Validator::new();
    let f = |name: &str| format!("{prefix}.{name}");
    if lead.email.trim().is_empty() && lead.phone.trim().is_empty() {
        v.violation(f("email"), "either email or phone is required");
    }
    v.email(&f("email"), &lead.email)
        .phone(&f("phone"), &lead.phone)
        .max_chars(&f("phone"), &lead.phone, 32);
    for (name, value, max) in [
        ("given_name", &lead.given_name, 100),
        ("family_name", &lead.family_name, 100),
        ("given_name_reading", &lead.given_name_reading, 100),
        ("family_name_reading", &lead.family_name_reading, 100),
        ("company", &lead.company, 200),
        ("job_title", &lead.job_title, 100),
        ("industry", &lead.industry, 100),
        ("region", &lead.region, 100),
        ("source", &lead.source, 64),
        ("campaign", &lead.campaign, 200),
        ("landing_page", &lead.landing_page, 2048),
        ("owner", &lead.owner, 256),
    ] {
        v.max_chars(&f(name), value, max);
    }
    if let Some(utm) = &lead.utm {
        for (name, value) in [
            ("source", &utm.source),
            ("medium", &utm.medium),
            ("campaign", &utm.campaign),
            ("term", &utm.term),
            ("content", &utm.content),
        ] {
            v.max_chars(&f(&format!("utm.{name}")), value, 200);
        }
    }
    v.check(
        lead.company_size >= 0,
        &f("company_size"),
        "must not be negative",
    );
    v.check(
        lead.country_code.is_empty()
            || (lead.country_code.len() == 2
                && lead.country_code.chars().all(|c| c.is_ascii_uppercase())),
        &f("country_code"),
        "must be an ISO 3166-1 alpha-2 code in upper case, e.g. JP",
    );
    v.check(
        lead.source
            .chars()
            .all(|c| c.is_ascii_lowercase() || c == '_' || c.is_ascii_digit()),
        &f("source"),
        "must be a lower snake case word such as form, import or inquiry",
    );
    let mut channels = Vec::new();
    for (i, consent) in lead.consents.iter().enumerate() {
        let channel_ok = Channel::try_from(consent.channel).is_ok();
        v.enum_value(
            &f(&format!("consents[{i}].channel")),
            channel_ok,
            consent.channel,
            true,
        );
        let state_ok = ConsentState::try_from(consent.state).is_ok();
        v.enum_value(
            &f(&format!("consents[{i}].state")),
            state_ok,
            consent.state,
            true,
        );
        if channels.contains(&consent.channel) {
            v.violation(
                f(&format!("consents[{i}].channel")),
                "appears twice; give one entry per channel",
            );
        }
        channels.push(consent.channel);
        v.max_chars(&f(&format!("consents[{i}].source")), &consent.source, 200);
    }
    v.check(lead.tags.len() <= 50, &f("tags"), "at most 50 tags");
    for (i, tag) in lead.tags.iter().enumerate() {
        v.required_max(&f(&format!("tags[{i}]")), tag, 64);
    }
    v.check(
        lead.custom_fields.len() <= 50,
        &f("custom_fields"),
        "at most 50 entries",
    );
    for (key, value) in &lead.custom_fields {
        let key_ok = !key.is_empty()
            && key.len() <= 64
            && key
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        v.check(
            key_ok,
            &f("custom_fields"),
            "keys must be 1-64 characters of a-z, 0-9 and _",
        );
        v.max_chars(&f(&format!("custom_fields[{key}]")), value, 1024);
    }
    v.finish()
}

/// Clears the output-only fields a caller may have sent and sets the initial stage.
fn prepare_new(mut lead: Lead) -> Lead {
    lead.name.clear();
    lead.etag.clear();
    lead.create_time = None;
    lead.update_time = None;
    lead.stage = LifecycleStage::Lead as i32;
    lead.score = 0.0;
    lead.grade.clear();
    lead.merged_leads.clear();
    lead
}

/// Creates a lead, refusing one whose normalized e-mail or phone is already taken.
pub async fn create(store: &Store, lead: Lead, lead_id: &str, request_id: &str) -> Result<Lead> {
    validate(&lead, "lead")?;
    let lead = prepare_new(lead);
    store
        .create_by::<Leads, Error, _>(request_id, async |tx| {
            if let Some((key, existing)) = find_duplicate(tx, &lead, "").await? {
                return Err(Error::DuplicateLead { key, existing });
            }
            insert_graded(tx, lead, lead_id, "CreateLead").await
        })
        .await
}

/// Inserts a new lead, grades (and scores) it at once under the published model, and emits
/// `lead.created` with the graded lead.
async fn insert_graded(
    tx: &mut WriteTx<'_>,
    lead: Lead,
    lead_id: &str,
    cause: &str,
) -> Result<Lead> {
    let created = tx.insert::<Leads>("", lead_id, lead).await?;
    let outcome = crate::scoring::rescore(tx, created, cause).await?;
    tx.emit::<Leads>("created", &outcome.lead).await?;
    crate::scoring::emit(tx, &outcome).await?;
    Ok(outcome.lead)
}

/// Applies `patch` under `mask` to the lead it names, guarded by its etag.
pub async fn update(store: &Store, patch: Lead, mask: Option<&FieldMask>) -> Result<Lead> {
    kizuna_store::require_name::<Leads>(&patch.name, "lead.name")?;
    let mut tx = store.begin().await?;
    let mut lead = tx.get::<Leads>(&patch.name).await?;
    kizuna_store::check_etag::<Leads>(&lead, &patch.etag)?;
    apply_mask!(lead, patch, mask, [
        "email" => email, "phone" => phone, "given_name" => given_name, "family_name" => family_name,
        "given_name_reading" => given_name_reading, "family_name_reading" => family_name_reading,
        "company" => company, "job_title" => job_title, "industry" => industry,
        "company_size" => company_size, "country_code" => country_code, "region" => region,
        "campaign" => campaign, "utm" => utm, "landing_page" => landing_page, "consents" => consents,
        "tags" => tags, "custom_fields" => custom_fields, "owner" => owner,
    ])?;
    validate(&lead, "lead")?;
    if let Some((key, existing)) = find_duplicate(&mut tx, &lead, &lead.name).await? {
        return Err(Error::DuplicateLead { key, existing });
    }
    let updated = tx.replace::<Leads>(lead).await?;
    // A changed profile regrades the lead (fit rules), which can carry it over the MQL line.
    let outcome = crate::scoring::rescore(&mut tx, updated, "UpdateLead").await?;
    tx.emit::<Leads>("updated", &outcome.lead).await?;
    crate::scoring::emit(&mut tx, &outcome).await?;
    tx.commit().await?;
    Ok(outcome.lead)
}

/// Deletes the lead `name` (after the etag check) with its stage history, so a lead created
/// later under the same id starts with none; emits `lead.deleted`.
pub async fn delete(store: &Store, name: &str, etag: &str) -> Result<Lead> {
    let mut tx = store.begin().await?;
    let current = tx.get::<Leads>(name).await?;
    kizuna_store::check_etag::<Leads>(&current, etag)?;
    tx.remove::<Leads>(name).await?;
    crate::scoring::scores::forget(&mut tx, name).await?;
    crate::stages::forget_history(&mut tx, name).await?;
    tx.emit::<Leads>("deleted", &current).await?;
    tx.commit().await?;
    Ok(current)
}

/// The live lead behind `name` (itself, or the lead it was merged into); names that are not
/// lead names come back unchanged for the caller's validation to report.
pub async fn live_lead_name(store: &Store, name: &str) -> Result<LiveLead> {
    if kizuna_store::parse_name::<Leads>(name).is_none() {
        return Ok(LiveLead::unresolved(name));
    }
    let mut conn = store.db().acquire().await.map_err(kizuna_store::db_error)?;
    Ok(redirects::live(&mut conn, name).await?)
}

/// `name` of an activity with its lead part resolved like [`live_lead_name`].
pub async fn live_activity_name(store: &Store, name: &str) -> Result<String> {
    match kizuna_store::parse_name::<crate::tables::Activities>(name) {
        Some(parsed) => {
            let lead = live_lead_name(store, &parsed.parent).await?;
            Ok(kizuna_store::format_name::<crate::tables::Activities>(
                lead.as_str(),
                &parsed.id,
            ))
        }
        None => Ok(name.to_owned()),
    }
}

/// The first other lead sharing the normalized e-mail or phone of `lead`.
async fn find_duplicate(
    tx: &mut WriteTx<'_>,
    lead: &Lead,
    except_name: &str,
) -> Result<Option<(&'static str, String)>> {
    for (key, column, value) in [
        ("email", "email_key", email_key(&lead.email)),
        ("phone", "phone_key", phone_key(&lead.phone)),
    ] {
        if let Some(existing) = tx.find_other::<Leads>(column, &value, except_name).await? {
            return Ok(Some((key, existing)));
        }
    }
    Ok(None)
}

/// Reads a lead; the name of a lead merged away resolves to the lead it was merged into.
pub async fn get(store: &Store, name: &str) -> Result<Lead> {
    match store.get::<Leads>(name).await {
        Err(ApiError::NotFound { .. }) if kizuna_store::parse_name::<Leads>(name).is_some() => {
            let mut conn = store.db().acquire().await.map_err(kizuna_store::db_error)?;
            match redirects::resolve(&mut conn, name).await? {
                Some(target) => Ok(store.get::<Leads>(&target).await?),
                None => Err(ApiError::NotFound {
                    kind: "Lead",
                    name: name.to_owned(),
                }
                .into()),
            }
        }
        other => Ok(other?),
    }
}

/// Idempotency ledger method of `CaptureLead` (and of every `ImportLeads` row).
const CAPTURE_METHOD: &str = "CaptureLead";

/// How many times a capture is attempted when a concurrent capture took the same e-mail or
/// phone between the duplicate lookup and the write (the next attempt merges into it).
const CAPTURE_ATTEMPTS: usize = 3;

/// Captures a lead: creates it, or merges it into the existing lead it matches.
///
/// Idempotent by `request_id` (ledger method `CaptureLead`): a retry answers with the first
/// response and changes nothing. In one write transaction the existing lead is looked up by
/// the normalized e-mail key, then the phone key. Without a match the lead is created as by
/// `CreateLead` (`lead.created`, outcome CREATED). With one, that lead is locked and the
/// captured fields merged into it by [`rules::merge_fields`] (it is stored only when something
/// changed), `lead.merged` is emitted with it, and the outcome is MERGED with `matched_on` and
/// the `changed_fields`.
///
/// When the e-mail matches a lead X and the phone another lead Y, the capture merges into X
/// (the e-mail wins) and Y is left untouched; the captured phone is then not copied into X
/// (it belongs to Y). Consents captured without `update_time` are stamped with the request
/// time. A concurrent capture of the same new person by another request is retried, so it
/// merges instead of failing on the unique keys.
pub async fn capture(store: &Store, lead: Lead, request_id: &str) -> Result<CaptureLeadResponse> {
    validate(&lead, "lead")?;
    let mut lead = prepare_new(lead);
    let now = kizuna_store::time::to_timestamp(kizuna_db::now_micros());
    for consent in &mut lead.consents {
        if consent.update_time.is_none() {
            consent.update_time = Some(now);
        }
    }
    let mut attempt = 1;
    loop {
        match capture_once(store, lead.clone(), request_id).await {
            Err(Error::Api(ApiError::AlreadyExists { .. } | ApiError::NotFound { .. }))
                if attempt < CAPTURE_ATTEMPTS =>
            {
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// One attempt of [`capture`] with `lead` already validated and prepared.
async fn capture_once(store: &Store, lead: Lead, request_id: &str) -> Result<CaptureLeadResponse> {
    store
        .idempotent(CAPTURE_METHOD, request_id, async |tx| {
            let by_email = tx
                .find_other::<Leads>("email_key", &email_key(&lead.email), "")
                .await?;
            let by_phone = tx
                .find_other::<Leads>("phone_key", &phone_key(&lead.phone), "")
                .await?;
            match (by_email, by_phone) {
                (None, None) => {
                    let created = insert_graded(tx, lead, "", CAPTURE_METHOD).await?;
                    Ok(CaptureLeadResponse {
                        lead: Some(created),
                        outcome: CaptureOutcome::Created as i32,
                        ..Default::default()
                    })
                }
                (Some(existing), by_phone) => {
                    let mut lead = lead;
                    if by_phone.is_some_and(|other| other != existing) {
                        // The phone is another lead's: merge into the e-mail's lead without it.
                        lead.phone.clear();
                    }
                    merge_captured(tx, &existing, &lead, "email").await
                }
                (None, Some(existing)) => merge_captured(tx, &existing, &lead, "phone").await,
            }
        })
        .await
}

/// Merges the captured `lead` into the lead `existing` (locking it) and emits `lead.merged`.
async fn merge_captured(
    tx: &mut WriteTx<'_>,
    existing: &str,
    lead: &Lead,
    matched_on: &str,
) -> Result<CaptureLeadResponse> {
    let mut stored = tx.get::<Leads>(existing).await?;
    let changed = rules::merge_fields(&mut stored, lead);
    let mut outcome = None;
    if !changed.is_empty() {
        validate(&stored, "lead")?;
        stored = tx.replace::<Leads>(stored).await?;
        // Filled profile fields can change the grade (and so the MQL crossing).
        let rescored = crate::scoring::rescore(tx, stored, "CaptureLead").await?;
        stored = rescored.lead.clone();
        outcome = Some(rescored);
    }
    tx.emit::<Leads>("merged", &stored).await?;
    if let Some(outcome) = &outcome {
        crate::scoring::emit(tx, outcome).await?;
    }
    Ok(CaptureLeadResponse {
        lead: Some(stored),
        outcome: CaptureOutcome::Merged as i32,
        matched_on: matched_on.into(),
        changed_fields: changed.into_iter().map(String::from).collect(),
    })
}

/// Leads per backfill transaction.
const BACKFILL_CHUNK: usize = 500;

/// How long a failed backfill waits before it tries again.
const BACKFILL_RETRY: std::time::Duration = std::time::Duration::from_secs(5);

/// The worker that runs the column backfills the migrations registered (`leads.tags` for leads
/// stored before migration 4) until they are done: one replica at a time (a lease), resuming
/// after its last chunk, retrying a failure (a database that is down or behind its migrations)
/// every few seconds, and stopping with the service.
pub fn backfills(store: &Store) -> Worker {
    let leased = store.clone();
    Worker::leased(
        store,
        "leads.backfills",
        LeaseSettings::default(),
        move |_fence| {
            let store = leased.clone();
            async move {
                let mut stopping = store.stopping();
                // Resumable and idempotent: after a takeover it finds what is left, or nothing.
                while let Err(error) = store
                    .backfill_column::<Leads>("tags", BACKFILL_CHUNK, &stopping)
                    .await
                {
                    tracing::warn!(%error, "leads.tags backfill failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(BACKFILL_RETRY) => {}
                        _ = stopping.changed() => {}
                    }
                    if *stopping.borrow() {
                        return;
                    }
                }
                // Done: hold the lease until the stop, so no stand-by redoes the check.
                let _ = stopping.wait_for(|stop| *stop).await;
            }
        },
    )
}
