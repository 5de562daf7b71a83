//! Lead scoring, all of it: the models (engagement rules with points per activity decaying
//! with a half-life, fit rules giving a grade A-D, the MQL thresholds; this module), the pure
//! [`engine`] and its incremental [`state`], applying scores to leads as activities arrive
//! ([`apply`], which moves leads to ENGAGED and MQL through `crate::stages`), the stored
//! score states and batched `lead.score_changed` ([`scores`]), rescoring jobs ([`jobs`]) and
//! the explained score of `GetLeadScore` ([`explain`]).

pub mod apply;
pub mod engine;
pub mod explain;
pub mod jobs;
pub mod scores;
pub mod state;

pub use apply::{ACTIVITY_CAUSE, Outcome, emit, emit_all, rescore, score_after_activity};
pub use scores::SCORE_EPSILON;

use kizuna_errors::{ApiError, Validator};
use kizuna_proto::leads::{ActivityKind, ScoringModel, scoring_model};
use kizuna_store::{Store, apply_mask, db_error};

use prost_types::FieldMask;

use prost::Message;
use sqlx::Row;

use crate::error::{Error, Result};
use crate::tables::ScoringModels;

const GRADES: [&str; 4] = ["A", "B", "C", "D"];
/// Most characters of a fit rule's `field`: room for `custom_fields.` and a 64-character key.
pub const MAX_FIT_FIELD_CHARS: usize = 100;

/// Checks a scoring model's caller-settable fields.
pub fn validate(model: &ScoringModel) -> Result<(), ApiError> {
    let mut v = Validator::new();
    v.required_max("scoring_model.display_name", &model.display_name, 200)
        .max_chars("scoring_model.description", &model.description, 2000);
    v.check(
        model.half_life_days.is_finite()
            && model.half_life_days >= 0.0
            && model.half_life_days <= 3650.0,
        "scoring_model.half_life_days",
        "must be between 0 (no decay) and 3650",
    );
    v.check(
        model.mql_score_threshold.is_finite() && model.mql_score_threshold >= 0.0,
        "scoring_model.mql_score_threshold",
        "must be a non-negative number",
    );
    v.check(
        model.mql_min_grade.is_empty() || GRADES.contains(&model.mql_min_grade.as_str()),
        "scoring_model.mql_min_grade",
        "must be one of A, B, C, D",
    );
    let state_known = scoring_model::State::try_from(model.state).is_ok();
    v.enum_value("scoring_model.state", state_known, model.state, false);
    v.check(
        model.engagement_rules.len() <= 200,
        "scoring_model.engagement_rules",
        "at most 200 rules",
    );
    let mut ids = Vec::new();
    for (i, rule) in model.engagement_rules.iter().enumerate() {
        let f = |name: &str| format!("scoring_model.engagement_rules[{i}].{name}");
        v.required_max(&f("rule_id"), &rule.rule_id, 64);
        if ids.contains(&rule.rule_id) {
            v.violation(f("rule_id"), "is used twice");
        }
        ids.push(rule.rule_id.clone());
        let known = ActivityKind::try_from(rule.activity_kind).is_ok();
        v.enum_value(&f("activity_kind"), known, rule.activity_kind, true);
        v.check(
            rule.points.is_finite(),
            &f("points"),
            "must be a finite number",
        );
        v.check(
            rule.max_points.is_finite() && rule.max_points >= 0.0,
            &f("max_points"),
            "must be >= 0",
        );
        v.check(
            rule.max_points_per_day.is_finite() && rule.max_points_per_day >= 0.0,
            &f("max_points_per_day"),
            "must be >= 0",
        );
        v.max_chars(&f("url_contains"), &rule.url_contains, 2048);
    }
    v.check(
        model.fit_rules.len() <= 200,
        "scoring_model.fit_rules",
        "at most 200 rules",
    );
    for (i, rule) in model.fit_rules.iter().enumerate() {
        let f = |name: &str| format!("scoring_model.fit_rules[{i}].{name}");
        v.required_max(&f("rule_id"), &rule.rule_id, 64);
        if ids.contains(&rule.rule_id) {
            v.violation(f("rule_id"), "is used twice");
        }
        ids.push(rule.rule_id.clone());
        v.required_max(&f("field"), &rule.field, MAX_FIT_FIELD_CHARS);
        if !rule.field.is_empty() && !engine::is_fit_field(&rule.field) {
            v.violation(
                f("field"),
                format!(
                    "`{}` is not a profile field a fit rule can read",
                    rule.field
                ),
            );
        }
        v.required(&f("value"), &rule.value);
        let known = scoring_model::fit_rule::Operator::try_from(rule.operator).is_ok();
        v.enum_value(&f("operator"), known, rule.operator, true);
        v.max_chars(&f("value"), &rule.value, 1024);
        v.check(
            rule.points.is_finite(),
            &f("points"),
            "must be a finite number",
        );
    }
    v.finish()
}

/// Creates a model; a new model starts as a draft at revision 1 unless the caller publishes it,
/// in which case a rescoring job starts in the same transaction ([`jobs::start`]).
pub async fn create(
    store: &Store,
    mut model: ScoringModel,
    id: &str,
    request_id: &str,
) -> Result<(ScoringModel, bool)> {
    validate(&model)?;
    if model.state == scoring_model::State::Unspecified as i32 {
        model.state = scoring_model::State::Draft as i32;
    }
    model.revision = 1;
    model.rescoring_job.clear();
    const METHOD: &str = "CreateScoringModel";
    // Set by this call's own transaction; a replay (or a lost race) answers with the first
    // call's model, which started its job itself.
    let mut ours: Option<(ScoringModel, bool)> = None;
    let answered = store
        .idempotent(METHOD, request_id, async |tx| {
            let id = if id.is_empty() {
                uuid::Uuid::now_v7().to_string()
            } else {
                id.to_owned()
            };
            let started = jobs::needs_rescoring(None, &model);
            if started {
                model.name = kizuna_store::format_name::<ScoringModels>("", &id);
                let job = jobs::start(tx, &model).await?;
                model.rescoring_job = job.name;
            }
            let created = tx.insert::<ScoringModels>("", &id, model).await?;
            tx.emit::<ScoringModels>("created", &created).await?;
            ours = Some((created.clone(), started));
            Ok::<_, Error>(created)
        })
        .await?;
    let started = matches!(&ours, Some((created, true)) if *created == answered);
    Ok((answered, started))
}

/// Updates a model; every accepted change is a new revision. Publishing it, or changing how a
/// published model scores, starts a rescoring job in the same transaction. Whether one started.
pub async fn update(
    store: &Store,
    patch: ScoringModel,
    mask: Option<&FieldMask>,
) -> Result<(ScoringModel, bool)> {
    kizuna_store::require_name::<ScoringModels>(&patch.name, "scoring_model.name")?;
    let mut tx = store.begin().await?;
    let before = tx.get::<ScoringModels>(&patch.name).await?;
    kizuna_store::check_etag::<ScoringModels>(&before, &patch.etag)?;
    let mut model = before.clone();
    apply_mask!(model, patch, mask, [
        "display_name" => display_name, "description" => description,
        "engagement_rules" => engagement_rules, "fit_rules" => fit_rules,
        "half_life_days" => half_life_days, "mql_score_threshold" => mql_score_threshold,
        "mql_min_grade" => mql_min_grade, "state" => state,
    ])?;
    validate(&model)?;
    model.revision += 1;
    let started = jobs::needs_rescoring(Some(&before), &model);
    if started {
        let job = jobs::start(&mut tx, &model).await?;
        model.rescoring_job = job.name;
    }
    let updated = tx.replace::<ScoringModels>(model).await?;
    tx.emit::<ScoringModels>("updated", &updated).await?;
    tx.commit().await?;
    Ok((updated, started))
}

/// The newest published scoring model (by update time), if any.
pub async fn published_model(
    conn: &mut sqlx::AnyConnection,
) -> Result<Option<ScoringModel>, ApiError> {
    let row = sqlx::query(
        "SELECT data FROM scoring_models WHERE parent = $1 AND state = $2 \
         ORDER BY update_time DESC, id DESC LIMIT 1",
    )
    .bind("")
    .bind("PUBLISHED")
    .fetch_optional(&mut *conn)
    .await
    .map_err(db_error)?;
    row.map(|row| {
        let data: Vec<u8> = row.try_get(0).map_err(db_error)?;
        ScoringModel::decode(data.as_slice())
            .map_err(|e| ApiError::Internal(format!("stored ScoringModel is corrupt: {e}")))
    })
    .transpose()
}
