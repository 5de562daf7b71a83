//! `MergeLeads`: one lead merged into another by hand, leaving a redirect.
//!
//! In one write transaction, with both leads locked in name order (so two merges of the same
//! pair in opposite directions cannot deadlock on PostgreSQL):
//!
//! 1. the fields are merged by [`rules::merge_fields`] (the survivor's values win, consent by the
//!    strictest state);
//! 2. the merged lead's activities move under the survivor, keeping their ids (an id the
//!    survivor already uses gets a new UUIDv7);
//! 3. its stage history moves over too, its score resets no longer acting as resets (the
//!    survivor's own latest reset stays the floor of its score, so the merged lead's activities
//!    all count);
//! 4. its score state is dropped and its row deleted; its name (and every name that redirected
//!    to it) now redirects to the survivor, and is listed in the survivor's `merged_leads`;
//! 5. the stage: the survivor's is kept unless the merged lead is further along in LEAD <
//!    ENGAGED < RECYCLED < MQL < SQL; a DISQUALIFIED lead (or one in a customer stage past the
//!    lead funnel, which leads do not reach) on either side keeps the survivor's stage (a disqualified survivor stays disqualified, and a disqualified duplicate
//!    does not disqualify the survivor). A change is recorded with cause `lead.merged`;
//! 6. the survivor is rescored from all its activities (it may cross into MQL), and
//!    `lead.merged` (subject: the survivor) is emitted, followed by the rescoring's events.

use kizuna_errors::{ApiError, Validator};
use kizuna_proto::leads::{Lead, MergeLeadsRequest};
use kizuna_proto::types::LifecycleStage;
use kizuna_store::{MAX_REQUEST_ID_CHARS, Store};

use super::{redirects, rules, validate};
use crate::error::Result;
use crate::scoring::{self, scores};
use crate::stages::{self, stage_of};
use crate::tables::Leads;

/// Idempotency ledger method of `MergeLeads`.
const METHOD: &str = "MergeLeads";
/// Cause recorded in the stage history and passed to rescoring.
pub const MERGE_CAUSE: &str = "lead.merged";

/// Position of a stage in the lead funnel for merges; `None` for DISQUALIFIED and the customer
/// stages past the funnel (never taken over, and a survivor in one keeps it).
fn funnel_rank(stage: LifecycleStage) -> Option<u8> {
    use LifecycleStage::*;
    match stage {
        Unspecified => Some(0),
        Lead => Some(1),
        Engaged => Some(2),
        Recycled => Some(3),
        Mql => Some(4),
        Sql => Some(5),
        Disqualified | Customer | Loyal | Advocate | AtRisk | Dormant | WonBack => None,
    }
}

/// The stage of a survivor in `survivor` after merging a lead in `merged`.
pub fn merged_stage(survivor: LifecycleStage, merged: LifecycleStage) -> LifecycleStage {
    match (funnel_rank(survivor), funnel_rank(merged)) {
        (Some(kept), Some(other)) if other > kept => merged,
        _ => survivor,
    }
}

fn check_name(v: &mut Validator, field: &str, name: &str) {
    v.required(field, name);
    if !name.is_empty() && kizuna_store::parse_name::<Leads>(name).is_none() {
        v.violation(
            field,
            "must be a Lead name like `leads/{id}` (ids: a-z, 0-9, -)",
        );
    }
}

/// Merges `request.merged_lead` into `request.lead` (see the module docs).
pub async fn merge(store: &Store, request: MergeLeadsRequest) -> Result<Lead> {
    let mut v = Validator::new();
    check_name(&mut v, "lead", &request.lead);
    check_name(&mut v, "merged_lead", &request.merged_lead);
    if !request.lead.is_empty() && request.lead == request.merged_lead {
        v.violation("merged_lead", "must name another lead than `lead`");
    }
    v.max_chars("request_id", &request.request_id, MAX_REQUEST_ID_CHARS);
    v.finish()?;

    store
        .idempotent(METHOD, &request.request_id, async |tx| {
            let survivor_name = redirects::resolve_name(tx.conn(), &request.lead).await?;
            let merged_name = redirects::resolve_name(tx.conn(), &request.merged_lead).await?;
            if survivor_name == merged_name {
                return Err(ApiError::invalid(
                    "merged_lead",
                    format!(
                        "`{}` and `{}` are the same lead (`{survivor_name}`)",
                        request.lead, request.merged_lead
                    ),
                )
                .into());
            }
            // Lock both rows in name order.
            let (survivor, merged) = if survivor_name < merged_name {
                let survivor = tx.get::<Leads>(&survivor_name).await?;
                (survivor, tx.get::<Leads>(&merged_name).await?)
            } else {
                let merged = tx.get::<Leads>(&merged_name).await?;
                (tx.get::<Leads>(&survivor_name).await?, merged)
            };
            kizuna_store::check_etag::<Leads>(&survivor, &request.etag)?;

            let now = kizuna_db::now_micros();
            let mut lead = survivor;
            rules::merge_fields(&mut lead, &merged);
            crate::activities::move_all(tx, &merged.name, &lead.name).await?;
            stages::move_history(tx, &merged.name, &lead.name).await?;
            scores::forget(tx, &merged.name).await?;
            // The merged row goes first: its e-mail or phone may now be the survivor's.
            tx.remove::<Leads>(&merged.name).await?;
            redirects::redirect(tx.conn(), &merged.name, &lead.name, now).await?;
            for name in merged.merged_leads.iter().chain([&merged.name]) {
                if !lead.merged_leads.contains(name) {
                    lead.merged_leads.push(name.clone());
                }
            }
            let from = stage_of(&lead);
            let to = merged_stage(from, stage_of(&merged));
            if to != from {
                lead.stage = to as i32;
                let change = stages::Transition {
                    from,
                    to,
                    cause: MERGE_CAUSE.into(),
                    reason: merged.name.clone(),
                    score_reset: false,
                };
                stages::record_changes(tx, &[(lead.name.clone(), change)], now).await?;
            }
            validate(&lead, "lead")?;
            let lead = tx.replace::<Leads>(lead).await?;
            let outcome = scoring::rescore(tx, lead, MERGE_CAUSE).await?;
            tx.emit::<Leads>("merged", &outcome.lead).await?;
            scoring::emit(tx, &outcome).await?;
            Ok(outcome.lead)
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_goes_to_the_furthest_unless_disqualified() {
        use LifecycleStage::*;
        assert_eq!(merged_stage(Lead, Mql), Mql);
        assert_eq!(merged_stage(Mql, Engaged), Mql);
        assert_eq!(merged_stage(Engaged, Recycled), Recycled);
        assert_eq!(merged_stage(Recycled, Mql), Mql);
        assert_eq!(merged_stage(Mql, Sql), Sql);
        assert_eq!(merged_stage(Sql, Mql), Sql);
        assert_eq!(merged_stage(Disqualified, Sql), Disqualified);
        assert_eq!(merged_stage(Engaged, Disqualified), Engaged);
    }
}
