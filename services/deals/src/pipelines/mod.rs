//! Pipelines: ordered stages, each with a default win probability and a forecast category. One
//! pipeline may be the default for new deals; marking another one clears the flag on the first.
//! Stages that hold open deals cannot be removed or turned into closed stages, and a pipeline
//! with open deals cannot be deleted.

use kizuna_errors::{ApiError, Validator};
use kizuna_proto::deals::{Deal, ForecastCategory, Pipeline, deal, pipeline::Stage};
use kizuna_store::{Store, WriteTx, apply_mask};
use prost_types::FieldMask;
use sqlx::Row;

use crate::error::{Error, Result};
use crate::tables::{Deals, Pipelines};

/// Most stages a pipeline may have.
pub const MAX_STAGES: usize = 50;
/// Longest stage id.
pub const MAX_STAGE_ID_CHARS: usize = 63;

/// Whether `id` is a stage id: 1-63 characters of `a-z`, `0-9`, `_` and `-`.
pub fn valid_stage_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_STAGE_ID_CHARS
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// The state a deal takes in `stage`: won and lost for the closed categories, else open.
pub fn stage_state(stage: &Stage) -> deal::State {
    match ForecastCategory::try_from(stage.forecast_category) {
        Ok(ForecastCategory::ClosedWon) => deal::State::Won,
        Ok(ForecastCategory::ClosedLost) => deal::State::Lost,
        _ => deal::State::Open,
    }
}

/// The stage `stage_id` of `pipeline`.
pub fn find_stage<'p>(pipeline: &'p Pipeline, stage_id: &str) -> Option<&'p Stage> {
    pipeline.stages.iter().find(|s| s.stage_id == stage_id)
}

/// The pipeline's stage for deals closed as `state` (won or lost), if it has one.
pub fn closing_stage(pipeline: &Pipeline, state: deal::State) -> Option<&Stage> {
    pipeline
        .stages
        .iter()
        .find(|s| stage_state(s) == state && state != deal::State::Open)
}

/// The stage ids of `pipeline`, for error messages.
pub fn stage_ids(pipeline: &Pipeline) -> String {
    pipeline
        .stages
        .iter()
        .map(|s| s.stage_id.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Checks a pipeline's caller-settable fields.
pub fn validate(pipeline: &Pipeline) -> Result<(), ApiError> {
    let mut v = Validator::new();
    v.required_max("pipeline.display_name", &pipeline.display_name, 200);
    v.check(
        (1..=MAX_STAGES).contains(&pipeline.stages.len()),
        "pipeline.stages",
        "must have between 1 and 50 stages",
    );
    let mut ids: Vec<&str> = Vec::new();
    let (mut won, mut lost) = (0, 0);
    for (i, stage) in pipeline.stages.iter().enumerate() {
        let f = |name: &str| format!("pipeline.stages[{i}].{name}");
        if stage.stage_id.is_empty() {
            v.violation(f("stage_id"), "is required");
        } else if !valid_stage_id(&stage.stage_id) {
            v.violation(
                f("stage_id"),
                "must be 1-63 characters of a-z, 0-9, _ and -, e.g. qualification",
            );
        } else if ids.contains(&stage.stage_id.as_str()) {
            v.violation(f("stage_id"), "is used twice; stage ids must be unique");
        }
        ids.push(&stage.stage_id);
        v.required_max(&f("display_name"), &stage.display_name, 100);
        v.check(
            stage.probability.is_finite() && (0.0..=1.0).contains(&stage.probability),
            &f("probability"),
            "must be a number from 0 to 1",
        );
        let known = ForecastCategory::try_from(stage.forecast_category).is_ok();
        v.enum_value(
            &f("forecast_category"),
            known,
            stage.forecast_category,
            true,
        );
        match stage_state(stage) {
            deal::State::Won => {
                won += 1;
                v.check(
                    won == 1,
                    &f("forecast_category"),
                    "only one stage may be FORECAST_CATEGORY_CLOSED_WON",
                );
            }
            deal::State::Lost => {
                lost += 1;
                v.check(
                    lost == 1,
                    &f("forecast_category"),
                    "only one stage may be FORECAST_CATEGORY_CLOSED_LOST",
                );
            }
            _ => {}
        }
    }
    if let Some(first) = pipeline.stages.first() {
        v.check(
            stage_state(first) == deal::State::Open,
            "pipeline.stages[0].forecast_category",
            "the first stage is where new deals start and cannot be a closed category",
        );
    }
    v.finish()
}

/// Clears the output-only fields a caller may have sent.
fn prepare_new(mut pipeline: Pipeline) -> Pipeline {
    pipeline.name.clear();
    pipeline.etag.clear();
    pipeline.create_time = None;
    pipeline.update_time = None;
    pipeline
}

/// Creates a pipeline; when it is the default, the previous default stops being one.
pub async fn create(
    store: &Store,
    pipeline: Pipeline,
    pipeline_id: &str,
    request_id: &str,
) -> Result<Pipeline> {
    validate(&pipeline)?;
    let pipeline = prepare_new(pipeline);
    // Not `Store::create_with`: the `pipeline.updated` events of demoted pipelines follow
    // `pipeline.created`.
    let method = "CreatePipeline";
    store
        .idempotent(method, request_id, async |tx| {
            let demoted = if pipeline.is_default {
                demote_default(tx, "").await?
            } else {
                Vec::new()
            };
            let created = tx.insert::<Pipelines>("", pipeline_id, pipeline).await?;
            tx.emit::<Pipelines>("created", &created).await?;
            for other in &demoted {
                tx.emit::<Pipelines>("updated", other).await?;
            }
            Ok(created)
        })
        .await
}

/// Applies `patch` under `mask` to the pipeline it names, guarded by its etag.
///
/// Open deals keep a valid position: their stages must stay and stay open, and when a stage's
/// probability changes the open deals in it take the new value (each emits `deal.updated`).
pub async fn update(store: &Store, patch: Pipeline, mask: Option<&FieldMask>) -> Result<Pipeline> {
    kizuna_store::require_name::<Pipelines>(&patch.name, "pipeline.name")?;
    let mut tx = store.begin().await?;
    let mut pipeline = tx.get::<Pipelines>(&patch.name).await?;
    kizuna_store::check_etag::<Pipelines>(&pipeline, &patch.etag)?;
    let before = pipeline.clone();
    apply_mask!(pipeline, patch, mask, [
        "display_name" => display_name, "stages" => stages, "is_default" => is_default,
    ])?;
    validate(&pipeline)?;
    if pipeline.stages != before.stages {
        check_open_stages(&mut tx, &pipeline).await?;
    }
    let demoted = if pipeline.is_default && !before.is_default {
        demote_default(&mut tx, &pipeline.name).await?
    } else {
        Vec::new()
    };
    let updated = tx.replace::<Pipelines>(pipeline).await?;
    let repriced = reprice_open_deals(&mut tx, &before, &updated).await?;
    tx.emit::<Pipelines>("updated", &updated).await?;
    for other in &demoted {
        tx.emit::<Pipelines>("updated", other).await?;
    }
    for deal in &repriced {
        tx.emit::<Deals>("updated", deal).await?;
    }
    tx.commit().await?;
    Ok(updated)
}

/// Deletes a pipeline, refused while open deals use it.
pub async fn delete(store: &Store, name: &str, etag: &str) -> Result<Pipeline> {
    let mut tx = store.begin().await?;
    let current = tx.get::<Pipelines>(name).await?;
    kizuna_store::check_etag::<Pipelines>(&current, etag)?;
    if let Some(deal) = crate::deals::first_open_deal(&mut tx, name).await? {
        return Err(Error::PipelineInUse {
            pipeline: name.to_owned(),
            deal,
        });
    }
    tx.remove::<Pipelines>(name).await?;
    tx.emit::<Pipelines>("deleted", &current).await?;
    tx.commit().await?;
    Ok(current)
}

/// The default pipeline, if one is marked.
pub async fn default_pipeline(tx: &mut WriteTx<'_>) -> Result<Option<Pipeline>> {
    let ids = default_ids(tx, "").await?;
    match ids.first() {
        Some(id) => Ok(Some(tx.get::<Pipelines>(&format!("pipelines/{id}")).await?)),
        None => Ok(None),
    }
}

async fn default_ids(tx: &mut WriteTx<'_>, except_name: &str) -> Result<Vec<String>> {
    let rows = kizuna_store::Sql::new("SELECT id FROM pipelines WHERE is_default = 1 ORDER BY id")
        .query()
        .fetch_all(tx.conn())
        .await
        .map_err(kizuna_store::db_error)?;
    let mut ids = Vec::new();
    for row in rows {
        let id: String = row.try_get(0).map_err(kizuna_store::db_error)?;
        if format!("pipelines/{id}") != except_name {
            ids.push(id);
        }
    }
    Ok(ids)
}

/// Clears `is_default` on every pipeline but `except_name`; returns the changed pipelines (their
/// events are for the caller to emit after its own writes).
async fn demote_default(tx: &mut WriteTx<'_>, except_name: &str) -> Result<Vec<Pipeline>> {
    let mut demoted = Vec::new();
    for id in default_ids(tx, except_name).await? {
        let mut other = tx.get::<Pipelines>(&format!("pipelines/{id}")).await?;
        other.is_default = false;
        demoted.push(tx.replace::<Pipelines>(other).await?);
    }
    Ok(demoted)
}

/// FAILED_PRECONDITION when the new stages drop or close a stage that holds open deals.
async fn check_open_stages(tx: &mut WriteTx<'_>, pipeline: &Pipeline) -> Result<()> {
    for (stage, deal) in crate::deals::open_deals_by_stage(tx, &pipeline.name).await? {
        let still_open =
            find_stage(pipeline, &stage).is_some_and(|s| stage_state(s) == deal::State::Open);
        if !still_open {
            return Err(Error::StageInUse {
                pipeline: pipeline.name.clone(),
                stage,
                deal,
            });
        }
    }
    Ok(())
}

/// Gives the open deals of stages whose probability changed the new probability.
async fn reprice_open_deals(
    tx: &mut WriteTx<'_>,
    before: &Pipeline,
    after: &Pipeline,
) -> Result<Vec<Deal>> {
    let mut repriced = Vec::new();
    for stage in &after.stages {
        let unchanged = find_stage(before, &stage.stage_id)
            .is_some_and(|old| old.probability.to_bits() == stage.probability.to_bits());
        if unchanged || stage_state(stage) != deal::State::Open {
            continue;
        }
        for name in crate::deals::open_deals_in_stage(tx, &after.name, &stage.stage_id).await? {
            let mut deal = tx.get::<Deals>(&name).await?;
            deal.probability = stage.probability;
            repriced.push(tx.replace::<Deals>(deal).await?);
        }
    }
    Ok(repriced)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage(id: &str, probability: f64, category: ForecastCategory) -> Stage {
        Stage {
            stage_id: id.into(),
            display_name: id.replace('_', " "),
            probability,
            forecast_category: category as i32,
        }
    }

    fn pipeline(stages: Vec<Stage>) -> Pipeline {
        Pipeline {
            display_name: "New business".into(),
            stages,
            ..Pipeline::default()
        }
    }

    fn standard() -> Pipeline {
        pipeline(vec![
            stage("qualification", 0.1, ForecastCategory::Pipeline),
            stage("proposal", 0.5, ForecastCategory::BestCase),
            stage("negotiation", 0.8, ForecastCategory::Commit),
            stage("closed_won", 1.0, ForecastCategory::ClosedWon),
            stage("closed_lost", 0.0, ForecastCategory::ClosedLost),
        ])
    }

    fn violations(result: Result<(), ApiError>) -> Vec<String> {
        match result {
            Err(ApiError::InvalidArgument(v)) => v.into_iter().map(|v| v.field).collect(),
            other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
        }
    }

    #[test]
    fn a_standard_pipeline_is_valid() {
        validate(&standard()).expect("valid");
    }

    #[test]
    fn a_repeated_stage_id_is_refused() {
        let mut p = standard();
        p.stages[2].stage_id = "proposal".into();
        assert_eq!(violations(validate(&p)), ["pipeline.stages[2].stage_id"]);
    }

    #[test]
    fn stage_ids_must_be_lower_case_words() {
        for bad in ["", "Proposal", "needs analysis", "a/b", &"x".repeat(64)] {
            let mut p = standard();
            p.stages[1].stage_id = bad.to_owned();
            assert_eq!(
                violations(validate(&p)),
                ["pipeline.stages[1].stage_id"],
                "{bad:?}"
            );
        }
        assert!(valid_stage_id("needs-analysis_2"));
        assert!(valid_stage_id(&"x".repeat(63)));
    }

    #[test]
    fn stage_counts_are_bounded() {
        assert_eq!(violations(validate(&pipeline(vec![]))), ["pipeline.stages"]);
        let many = (0..51)
            .map(|i| stage(&format!("s{i}"), 0.5, ForecastCategory::Pipeline))
            .collect();
        assert_eq!(violations(validate(&pipeline(many))), ["pipeline.stages"]);
        let fifty = (0..50)
            .map(|i| stage(&format!("s{i}"), 0.5, ForecastCategory::Pipeline))
            .collect();
        validate(&pipeline(fifty)).expect("50 stages are allowed");
    }

    #[test]
    fn probabilities_must_be_finite_within_zero_and_one() {
        for bad in [-0.01, 1.01, f64::NAN, f64::INFINITY] {
            let mut p = standard();
            p.stages[1].probability = bad;
            assert_eq!(
                violations(validate(&p)),
                ["pipeline.stages[1].probability"],
                "{bad}"
            );
        }
        let mut p = standard();
        p.stages[1].probability = 0.0;
        p.stages[2].probability = 1.0;
        validate(&p).expect("bounds are inclusive");
    }

    #[test]
    fn forecast_category_is_required_and_known() {
        let mut p = standard();
        p.stages[1].forecast_category = ForecastCategory::Unspecified as i32;
        p.stages[2].forecast_category = 99;
        assert_eq!(
            violations(validate(&p)),
            [
                "pipeline.stages[1].forecast_category",
                "pipeline.stages[2].forecast_category"
            ]
        );
    }

    #[test]
    fn one_closed_won_and_one_closed_lost_stage_at_most() {
        let mut p = standard();
        p.stages
            .push(stage("won_again", 1.0, ForecastCategory::ClosedWon));
        p.stages
            .push(stage("lost_again", 0.0, ForecastCategory::ClosedLost));
        assert_eq!(
            violations(validate(&p)),
            [
                "pipeline.stages[5].forecast_category",
                "pipeline.stages[6].forecast_category"
            ]
        );
    }

    #[test]
    fn the_first_stage_is_open() {
        let mut p = standard();
        p.stages.rotate_left(3);
        assert_eq!(
            violations(validate(&p)),
            ["pipeline.stages[0].forecast_category"]
        );
    }

    #[test]
    fn display_names_are_required_and_bounded() {
        let mut p = standard();
        p.display_name = " ".into();
        p.stages[0].display_name = "x".repeat(101);
        assert_eq!(
            violations(validate(&p)),
            ["pipeline.display_name", "pipeline.stages[0].display_name"]
        );
    }

    #[test]
    fn closing_stages_are_found_by_category() {
        let p = standard();
        assert_eq!(
            closing_stage(&p, deal::State::Won).map(|s| s.stage_id.as_str()),
            Some("closed_won")
        );
        assert_eq!(
            closing_stage(&p, deal::State::Lost).map(|s| s.stage_id.as_str()),
            Some("closed_lost")
        );
        assert!(closing_stage(&p, deal::State::Open).is_none());
    }
}
