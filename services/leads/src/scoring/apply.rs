//! Applying recorded activities (or a new model) to locked leads, many at a time: the one path
//! behind `CreateActivity`, `TrackActivity`, `TrackActivities`, merges and the rescoring job.
//!
//! For each lead: LEAD → ENGAGED on its first activity; then, under the newest published model,
//! its score is brought up to date. When the lead's stored [`ScoreState`] belongs to the model
//! and every new activity is at or after the state's anchor (the usual case: activities arrive
//! in time order), the new activities are applied incrementally, without reading the lead's
//! older activities. Otherwise (no state, another model revision, an activity older than the
//! anchor, a forced rescore) the state is rebuilt from the lead's counted activities (those
//! after its latest score reset), read for all such leads in two statements. A lead in ENGAGED
//! or RECYCLED whose score and grade pass the thresholds moves to MQL. Leads, history rows and
//! score states are written with multi-row statements; the caller emits [`Outcome::events`]
//! as the transaction's last writes.

use std::collections::HashMap;

use kizuna_errors::ApiError;
use kizuna_proto::leads::{Activity, Lead, ScoringModel};
use kizuna_proto::types::LifecycleStage;
use kizuna_store::WriteTx;
use kizuna_store::outbox::NewEvent;
use prost::Message;

use super::{published_model, scores};
use crate::scoring::engine;
use crate::scoring::state::{ScoreState, score_from_state};
use crate::stages::{Transition, stage_of};
use crate::tables::{LeadSet, Leads};

/// Cause recorded for changes made while recording an activity.
pub const ACTIVITY_CAUSE: &str = "activity.created";

/// What recording an activity did to its lead: the stored lead and the `lead.*` event verbs
/// to emit, in order.
#[derive(Debug)]
pub struct Outcome {
    /// The lead as stored.
    pub lead: Lead,
    /// Verbs of the `lead.*` events to emit (`engaged`, `qualified`); score changes are
    /// announced in batches by [`scores::flush`].
    pub events: Vec<&'static str>,
}

/// Inside the activity's write transaction, after the activity is inserted and with `lead`
/// read (and locked) by [`WriteTx::get`]: moves a LEAD to ENGAGED, rescores it (incrementally
/// when it can) and moves it to MQL when it passes the thresholds ([`apply()`]). The
/// caller emits [`Outcome::events`] with [`emit`] as the last writes.
pub async fn score_after_activity(
    tx: &mut WriteTx<'_>,
    lead: Lead,
    activity: &Activity,
) -> Result<Outcome, ApiError> {
    let model = published_model(tx.conn()).await?;
    let new = HashMap::from([(lead.name.clone(), vec![activity.clone()])]);
    let cause = Cause {
        cause: ACTIVITY_CAUSE,
        engage: true,
    };
    let mut outcomes = apply(
        tx,
        vec![lead],
        &new,
        model.as_ref(),
        Rescore::Incremental,
        cause,
    )
    .await?;
    outcomes
        .pop()
        .ok_or_else(|| ApiError::Internal("no outcome for the lead".into()))
}

/// Inside a write transaction, with `lead` read (and locked) by [`WriteTx::get`]: rescores it
/// from all its counted activities under the newest published model and moves a lead in
/// ENGAGED or RECYCLED whose score and grade pass the thresholds to MQL, recording `cause`
/// (e.g. `lead.merged`). The caller emits [`Outcome::events`] with [`emit`] as the last writes.
pub async fn rescore(tx: &mut WriteTx<'_>, lead: Lead, cause: &str) -> Result<Outcome, ApiError> {
    let model = published_model(tx.conn()).await?;
    let cause = Cause {
        cause,
        engage: false,
    };
    let mut outcomes = apply(
        tx,
        vec![lead],
        &HashMap::new(),
        model.as_ref(),
        Rescore::Rebuild,
        cause,
    )
    .await?;
    outcomes
        .pop()
        .ok_or_else(|| ApiError::Internal("no outcome for the lead".into()))
}

/// Emits the `lead.*` events of `outcome`; call as the transaction's last writes.
pub async fn emit(tx: &mut WriteTx<'_>, outcome: &Outcome) -> Result<(), ApiError> {
    emit_all(tx, std::slice::from_ref(outcome)).await
}

/// Emits the `lead.*` events of every outcome, in order, with multi-row inserts; call as the
/// transaction's last writes.
pub async fn emit_all(tx: &mut WriteTx<'_>, outcomes: &[Outcome]) -> Result<(), ApiError> {
    let events = outcomes
        .iter()
        .flat_map(|outcome| {
            outcome.events.iter().map(|verb| NewEvent {
                event_type: format!("lead.{verb}"),
                subject: outcome.lead.name.clone(),
                type_url: format!(
                    "type.googleapis.com/{}",
                    <Leads as kizuna_store::Table>::PROTO_NAME
                ),
                data: outcome.lead.encode_to_vec(),
            })
        })
        .collect();
    tx.emit_many(events).await
}

/// What to do about the score state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rescore {
    /// Apply new activities incrementally where the state allows it.
    Incremental,
    /// Rebuild every lead's state from its counted activities.
    Rebuild,
    /// [`Rescore::Rebuild`] for leads that are every lead from the first name to the last,
    /// sorted (a rescoring job's chunk): their activities are read by range.
    RebuildRange,
}

/// Why the changes happen, recorded in the stage history.
#[derive(Clone, Copy, Debug)]
pub struct Cause<'a> {
    /// e.g. `activity.created`, `lead.merged`, `rescoring`.
    pub cause: &'a str,
    /// Whether new activities move LEAD to ENGAGED.
    pub engage: bool,
}

/// The moment an activity happened: its occurrence time, else its creation time.
pub fn activity_time(activity: &Activity) -> Option<i64> {
    activity
        .occur_time
        .as_ref()
        .or(activity.create_time.as_ref())
        .map(kizuna_store::time::from_timestamp)
}

/// Applies `new` activities (by lead name; already inserted in `tx`) to `leads` (read for
/// change in `tx`), rescoring under `model`. Outcomes in the order of `leads`.
pub async fn apply(
    tx: &mut WriteTx<'_>,
    leads: Vec<Lead>,
    new: &HashMap<String, Vec<Activity>>,
    model: Option<&ScoringModel>,
    rescore: Rescore,
    cause: Cause<'_>,
) -> Result<Vec<Outcome>, ApiError> {
    let now = kizuna_db::now_micros();
    let names: Vec<String> = leads.iter().map(|l| l.name.clone()).collect();
    let empty = Vec::new();
    let mut stored = match model {
        Some(_) => scores::load(tx, &names).await?,
        None => HashMap::new(),
    };
    // Which leads need their state rebuilt from their activities.
    let rebuild: Vec<String> = match model {
        None => Vec::new(),
        Some(model) => names
            .iter()
            .filter(|name| {
                rescore != Rescore::Incremental
                    || match stored.get(*name).and_then(|s| s.state.as_ref()) {
                        Some(state) if state.is_for(model) => new
                            .get(*name)
                            .unwrap_or(&empty)
                            .iter()
                            .filter_map(activity_time)
                            .any(|t| !state.accepts(t)),
                        _ => true,
                    }
            })
            .cloned()
            .collect(),
    };
    let mut counted = counted_activities(tx, &rebuild, rescore == Rescore::RebuildRange).await?;

    // Rule conditions folded once per call, not once per activity.
    let mut prepared: Option<engine::Engine<'_>> = None;
    let mut outcomes = Vec::with_capacity(leads.len());
    let mut changed = Vec::new();
    let mut transitions: Vec<(String, Transition)> = Vec::new();
    let mut states: Vec<(String, ScoreState, f64, String, scores::Stored)> = Vec::new();
    for (index, mut lead) in leads.into_iter().enumerate() {
        let before = lead.clone();
        let mut events = Vec::new();
        let fresh = new.get(&lead.name).unwrap_or(&empty);
        let first_new = fresh.iter().map(|a| a.name.as_str()).min().unwrap_or("");
        if cause.engage && !fresh.is_empty() && stage_of(&lead) == LifecycleStage::Lead {
            transitions.push((
                lead.name.clone(),
                Transition {
                    from: LifecycleStage::Lead,
                    to: LifecycleStage::Engaged,
                    cause: cause.cause.into(),
                    reason: first_new.into(),
                    score_reset: false,
                },
            ));
            lead.stage = LifecycleStage::Engaged as i32;
            events.push("engaged");
        }
        if let Some(model) = model {
            let previous = stored.remove(&lead.name).unwrap_or_default();
            let state = match counted.remove(&lead.name) {
                Some((floor, activities)) => {
                    let mut state = ScoreState::from_activities(model, &activities);
                    // Nothing at or before the floor may be applied incrementally later.
                    if let Some(floor) = floor {
                        state.anchor = state.anchor.max(floor.saturating_add(1));
                    }
                    state
                }
                None => {
                    let mut state = previous
                        .state
                        .clone()
                        .unwrap_or_else(|| ScoreState::new(model));
                    let mut ordered: Vec<&Activity> = fresh.iter().collect();
                    ordered.sort_by(|a, b| {
                        activity_time(a)
                            .cmp(&activity_time(b))
                            .then_with(|| a.name.cmp(&b.name))
                    });
                    let engine = prepared.get_or_insert_with(|| engine::Engine::new(model));
                    for activity in ordered {
                        state.apply_prepared(engine, activity);
                    }
                    state
                }
            };
            // An activity stamped in the future (writer clock skew) counts at age 0.
            let as_of = now.max(state.anchor);
            let (score, grade, qualifies) = score_from_state(model, &lead, &state, as_of)
                .ok_or_else(|| {
                    ApiError::Internal(format!(
                        "score state of {} is not usable under {} revision {}",
                        lead.name, model.name, model.revision
                    ))
                })?;
            lead.score = score;
            lead.grade = grade.clone();
            let from = stage_of(&lead);
            if qualifies && matches!(from, LifecycleStage::Engaged | LifecycleStage::Recycled) {
                transitions.push((
                    lead.name.clone(),
                    Transition {
                        from,
                        to: LifecycleStage::Mql,
                        cause: cause.cause.into(),
                        reason: format!(
                            "{} (score {score:.3}, grade {grade:?} under {} revision {})",
                            if first_new.is_empty() {
                                lead.name.as_str()
                            } else {
                                first_new
                            },
                            model.name,
                            model.revision
                        ),
                        score_reset: false,
                    },
                ));
                lead.stage = LifecycleStage::Mql as i32;
                events.push("qualified");
            }
            states.push((lead.name.clone(), state, score, grade, previous));
        }
        if lead != before {
            changed.push(index);
        }
        outcomes.push(Outcome { lead, events });
    }

    // Write: leads that changed, history rows, score states.
    if !changed.is_empty() {
        let replaced = tx
            .replace_many::<Leads>(changed.iter().map(|&i| outcomes[i].lead.clone()).collect())
            .await?;
        for (&i, lead) in changed.iter().zip(replaced) {
            outcomes[i].lead = lead;
        }
    }
    crate::stages::record_changes(tx, &transitions, now).await?;
    let writes: Vec<scores::Write<'_>> = states
        .iter()
        .map(|(name, state, score, grade, previous)| scores::Write {
            lead: name,
            state: Some(state),
            score: *score,
            grade,
            notified_score: previous.notified_score,
            notified_grade: &previous.notified_grade,
        })
        .collect();
    scores::store(tx, &writes).await?;
    Ok(outcomes)
}

/// For each of `leads`: its latest score reset (if any) and the activities that count for its
/// score (those that occurred after it), oldest first. Two statements per chunk of leads; with
/// `contiguous` (the leads are every lead from the first name to the last, sorted, as a
/// rescoring job reads them) two range scans instead of name lists.
pub async fn counted_activities(
    tx: &mut WriteTx<'_>,
    leads: &[String],
    contiguous: bool,
) -> Result<HashMap<String, (Option<i64>, Vec<Activity>)>, ApiError> {
    let mut result: HashMap<String, (Option<i64>, Vec<Activity>)> = leads
        .iter()
        .map(|name| (name.clone(), (None, Vec::new())))
        .collect();
    let ranges: Vec<std::ops::Range<usize>> = if contiguous && !leads.is_empty() {
        std::iter::once(0..leads.len()).collect()
    } else {
        kizuna_store::bulk::statements(tx.db().statement_bytes(), leads, 2, |name| {
            2 * name.len() + 16
        })
    };
    for range in ranges {
        let chunk = &leads[range];
        let set = if contiguous {
            LeadSet::Range(&chunk[0], &chunk[chunk.len() - 1])
        } else {
            LeadSet::List(chunk)
        };
        for (name, floor) in crate::stages::score_floors(tx, &set).await? {
            if let Some(entry) = result.get_mut(&name) {
                entry.0 = Some(floor);
            }
        }
        for (parent, activity) in crate::activities::of_leads(tx, &set).await? {
            if let Some((floor, list)) = result.get_mut(&parent) {
                let counts = match (floor, activity_time(&activity)) {
                    (Some(floor), Some(t)) => t > *floor,
                    _ => true,
                };
                if counts {
                    list.push(activity);
                }
            }
        }
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activity_time_falls_back_to_create_time() {
        let mut activity = Activity {
            create_time: Some(kizuna_store::time::to_timestamp(5)),
            ..Default::default()
        };
        assert_eq!(activity_time(&activity), Some(5));
        activity.occur_time = Some(kizuna_store::time::to_timestamp(3));
        assert_eq!(activity_time(&activity), Some(3));
        assert_eq!(activity_time(&Activity::default()), None);
    }
}
