//! How leads resources map onto their tables: indexed columns for filters and ordering.

use kizuna_proto::leads::{
    Activity, ActivityKind, Lead, RescoringJob, ScoringModel, Segment, rescoring_job, scoring_model,
};
use kizuna_proto::types::LifecycleStage;
use kizuna_store::table::enum_short_name;
use kizuna_store::{Column, Table, Value, standard_meta};

use kizuna_normalize::{email_key, phone_key};

/// `leads/{lead}`.
#[derive(Debug)]
pub struct Leads;

impl Table for Leads {
    type Message = Lead;
    const KIND: &'static str = "Lead";
    const TABLE: &'static str = "leads";
    const COLLECTION: &'static str = "leads";
    const PARENT: Option<&'static str> = None;
    const EVENT_PREFIX: &'static str = "lead";
    const PROTO_NAME: &'static str = "kizuna.leads.v1.Lead";
    const UNIQUE: &'static [&'static str] = &["email_key", "phone_key"];
    const COLUMNS: &'static [Column] = &[
        Column::text("email"),
        Column::text("email_key"),
        Column::text("phone_key"),
        Column::text("given_name"),
        Column::text("family_name"),
        Column::text("company"),
        Column::text("industry"),
        Column::text("country_code"),
        Column::text("source"),
        Column::text("campaign"),
        Column::text("utm_source"),
        Column::text("utm_campaign"),
        Column::enumeration("stage").prefixed("LIFECYCLE_STAGE_"),
        Column::float("score"),
        Column::text("grade"),
        Column::text("owner"),
        Column::text("tags"),
    ];

    fn values(lead: &Lead) -> Vec<Value> {
        let utm = lead.utm.clone().unwrap_or_default();
        vec![
            lead.email.as_str().into(),
            email_key(&lead.email).into(),
            phone_key(&lead.phone).into(),
            lead.given_name.as_str().into(),
            lead.family_name.as_str().into(),
            lead.company.as_str().into(),
            lead.industry.as_str().into(),
            lead.country_code.as_str().into(),
            lead.source.as_str().into(),
            lead.campaign.as_str().into(),
            utm.source.into(),
            utm.campaign.into(),
            stage_name(lead.stage).into(),
            lead.score.into(),
            lead.grade.as_str().into(),
            lead.owner.as_str().into(),
            padded_tags(&lead.tags).into(),
        ]
    }

    standard_meta!();
}

/// The lead's tags as stored for exact-tag matching: joined with spaces and padded, e.g.
/// `" vip new "`, so a segment's `tags : "vip"` looks for `" vip "`.
pub fn padded_tags(tags: &[String]) -> String {
    if tags.is_empty() {
        return String::new();
    }
    format!(" {} ", tags.join(" "))
}

/// The short stored name of a lifecycle stage, e.g. `MQL`.
pub fn stage_name(stage: i32) -> String {
    LifecycleStage::try_from(stage)
        .map(|s| enum_short_name(s.as_str_name(), "LIFECYCLE_STAGE_"))
        .unwrap_or_default()
}

/// `leads/{lead}/activities/{activity}`.
#[derive(Debug)]
pub struct Activities;

impl Table for Activities {
    type Message = Activity;
    const KIND: &'static str = "Activity";
    const TABLE: &'static str = "activities";
    const COLLECTION: &'static str = "activities";
    const PARENT: Option<&'static str> = Some("leads");
    const EVENT_PREFIX: &'static str = "activity";
    const PROTO_NAME: &'static str = "kizuna.leads.v1.Activity";
    const COLUMNS: &'static [Column] = &[
        Column::enumeration("kind").prefixed("ACTIVITY_KIND_"),
        Column::text("url"),
        Column::time("occur_time"),
    ];
    const DEFAULT_ORDER: &'static str = "occur_time desc";

    fn values(activity: &Activity) -> Vec<Value> {
        let kind = ActivityKind::try_from(activity.kind)
            .map(|k| enum_short_name(k.as_str_name(), "ACTIVITY_KIND_"))
            .unwrap_or_default();
        let occur = activity
            .occur_time
            .as_ref()
            .map(kizuna_store::time::from_timestamp)
            .unwrap_or_default();
        vec![kind.into(), activity.url.as_str().into(), occur.into()]
    }

    standard_meta!();
}

/// `scoringModels/{scoring_model}`.
#[derive(Debug)]
pub struct ScoringModels;

impl Table for ScoringModels {
    type Message = ScoringModel;
    const KIND: &'static str = "ScoringModel";
    const TABLE: &'static str = "scoring_models";
    const COLLECTION: &'static str = "scoringModels";
    const PARENT: Option<&'static str> = None;
    const EVENT_PREFIX: &'static str = "scoring_model";
    const PROTO_NAME: &'static str = "kizuna.leads.v1.ScoringModel";
    const COLUMNS: &'static [Column] = &[
        Column::text("display_name"),
        Column::enumeration("state").prefixed("STATE_"),
        Column::int("revision"),
    ];

    fn values(model: &ScoringModel) -> Vec<Value> {
        let state = scoring_model::State::try_from(model.state)
            .map(|s| enum_short_name(s.as_str_name(), "STATE_"))
            .unwrap_or_default();
        vec![
            model.display_name.as_str().into(),
            state.into(),
            model.revision.into(),
        ]
    }

    standard_meta!();
}

/// `segments/{segment}`.
#[derive(Debug)]
pub struct Segments;

impl Table for Segments {
    type Message = Segment;
    const KIND: &'static str = "Segment";
    const TABLE: &'static str = "segments";
    const COLLECTION: &'static str = "segments";
    const PARENT: Option<&'static str> = None;
    const EVENT_PREFIX: &'static str = "segment";
    const PROTO_NAME: &'static str = "kizuna.leads.v1.Segment";
    const COLUMNS: &'static [Column] = &[Column::text("display_name")];

    fn values(segment: &Segment) -> Vec<Value> {
        vec![segment.display_name.as_str().into()]
    }

    standard_meta!();
}

/// `rescoringJobs/{rescoring_job}`. The runner's cursor and lease live in extra columns of the
/// same table (`cursor`, `lease_owner`, `lease_expire`), outside the resource.
#[derive(Debug)]
pub struct RescoringJobs;

impl Table for RescoringJobs {
    type Message = RescoringJob;
    const KIND: &'static str = "RescoringJob";
    const TABLE: &'static str = "rescoring_jobs";
    const COLLECTION: &'static str = "rescoringJobs";
    const PARENT: Option<&'static str> = None;
    const EVENT_PREFIX: &'static str = "rescoring_job";
    const PROTO_NAME: &'static str = "kizuna.leads.v1.RescoringJob";
    const COLUMNS: &'static [Column] = &[
        Column::text("scoring_model"),
        Column::enumeration("state").prefixed("STATE_"),
    ];

    fn values(job: &RescoringJob) -> Vec<Value> {
        let state = rescoring_job::State::try_from(job.state)
            .map(|s| enum_short_name(s.as_str_name(), "STATE_"))
            .unwrap_or_default();
        vec![job.scoring_model.as_str().into(), state.into()]
    }

    standard_meta!();
}

/// The leads a multi-lead read covers: every lead whose name sorts between two names (a
/// rescoring job's chunk, read as a range scan), or a list of names.
#[derive(Clone, Copy, Debug)]
pub enum LeadSet<'a> {
    /// From the first name to the last, inclusive.
    Range(&'a str, &'a str),
    /// These names.
    List(&'a [String]),
}

impl LeadSet<'_> {
    /// Appends `column` restricted to this set (`column >= a AND column <= b`, or
    /// `column IN (...)`), every name bound.
    pub fn restrict(&self, sql: &mut kizuna_store::Sql, column: &str) {
        match self {
            LeadSet::Range(first, last) => {
                sql.push(&format!("{column} >= "))
                    .bind(*first)
                    .push(&format!(" AND {column} <= "))
                    .bind(*last);
            }
            LeadSet::List(names) => {
                sql.push(&format!("{column} IN ("));
                for (i, name) in names.iter().enumerate() {
                    if i > 0 {
                        sql.push(", ");
                    }
                    sql.bind(name.as_str());
                }
                sql.push(")");
            }
        }
    }
}
