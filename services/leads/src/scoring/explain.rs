//! `GetLeadScore`: a lead's live score as of a time under the newest published model, explained
//! rule by rule (the contributions sum to the score).

use kizuna_errors::{ApiError, Validator};
use kizuna_proto::leads::{Activity, LeadScore, lead_score};
use kizuna_store::{Store, db_error};
use prost_types::Timestamp;

use super::apply::activity_time;
use super::engine::{self, RuleKind};
use super::published_model;
use crate::capture::LiveLead;
use crate::error::Result;
use crate::stages::validate_name;
use crate::tables::Leads;

/// FAILED_PRECONDITION reason: no scoring model is published.
pub const NO_PUBLISHED_MODEL: &str = "NO_PUBLISHED_MODEL";

/// The live score of the lead `name` as of `as_of` (default now) under the newest published
/// model, counting the activities that occurred by then.
pub async fn lead_score(
    store: &Store,
    name: &LiveLead,
    as_of: Option<Timestamp>,
) -> Result<LeadScore> {
    let mut v = Validator::new();
    validate_name(&mut v, "name", name);
    if let Some(ts) = &as_of {
        v.check(
            (0..1_000_000_000).contains(&ts.nanos),
            "as_of",
            "nanos out of range",
        );
    }
    v.finish()?;
    let as_of = as_of
        .as_ref()
        .map(kizuna_store::time::from_timestamp)
        .unwrap_or_else(kizuna_db::now_micros);
    let lead = store.get::<Leads>(name).await?;
    let mut conn = store.db().acquire().await.map_err(db_error)?;
    let model = published_model(&mut conn)
        .await?
        .ok_or_else(|| ApiError::FailedPrecondition {
            reason: NO_PUBLISHED_MODEL,
            message: "no scoring model is published; publish one to score leads".into(),
        })?;
    let activities: Vec<Activity> = crate::activities::counted(&mut conn, name, as_of)
        .await?
        .into_iter()
        .filter(|a| activity_time(a).is_some_and(|t| t <= as_of))
        .collect();
    let score = engine::evaluate(&model, &lead, &activities, as_of);
    let contributions = score
        .breakdown
        .iter()
        .map(|c| lead_score::RuleContribution {
            rule_id: c.rule_id.clone(),
            kind: match c.kind {
                RuleKind::Engagement => lead_score::RuleKind::Engagement,
                RuleKind::Fit => lead_score::RuleKind::Fit,
            } as i32,
            points: c.points,
            activities: i32::try_from(c.activities).unwrap_or(i32::MAX),
        })
        .collect();
    Ok(LeadScore {
        lead: lead.name,
        scoring_model: model.name,
        scoring_model_revision: model.revision,
        score: score.score,
        grade: score.grade,
        qualifies: score.qualifies,
        contributions,
        as_of: Some(kizuna_store::time::to_timestamp(as_of)),
    })
}
