//! The scoring engine: applies a [`ScoringModel`] to one lead's profile and activities at a
//! given moment. Pure computation (no database, no gRPC), so the same function serves
//! `GetLeadScore`, scoring on ingest and the rescoring job, and is property-tested.
//!
//! # Engagement (the score)
//!
//! Activities are first put in a deterministic order: by occurrence time, then by resource
//! name (a stable sort, so activities equal in both keep their input order; such activities
//! earn identical contributions, so the result does not depend on it). The order of the input
//! slice therefore never changes the result, bit for bit.
//!
//! An activity matches an engagement rule when every non-empty condition matches:
//!
//! - `activity_kind` equals the activity's kind (`ACTIVITY_KIND_UNSPECIFIED` matches nothing);
//! - `url_contains` is a substring of the activity's URL, both folded with
//!   [`kizuna_normalize::text_key`] (NFKC, so full-width `／ＰＲＩＣＩＮＧ` is `/pricing`, then
//!   lower case; the needle is also trimmed);
//! - `property_key` is a key of the activity's properties (exact, keys are identifiers);
//! - `property_value` equals that property's value after the same folding; without a
//!   `property_key`, some property must have that value.
//!
//! Each match earns the rule's `points` ("raw" points). Caps apply to raw points, walking the
//! rule's matches in the order above (oldest first):
//!
//! 1. `max_points_per_day` (0 = none) limits what the rule earns on one UTC calendar day
//!    (`occur_time` divided into days of 86 400 s from the Unix epoch). The proto speaks of the
//!    organization's time zone; no such setting exists yet, so days are UTC.
//! 2. `max_points` (0 = none) limits what the rule earns over all time.
//!
//! A match that would cross a cap earns the part below it; later matches earn nothing. For a
//! rule with negative points the caps bound the magnitude (the rule can take away at most
//! `max_points`). Because caps use raw points in chronological order, they do not depend on
//! `as_of`: the oldest matches fill the cap, and each surviving contribution then decays by its
//! own age: `raw × 0.5^(age_days / half_life_days)`, with `half_life_days = 0` meaning no
//! decay. So after exactly one half-life a contribution is worth half, after two a quarter.
//!
//! An activity later than `as_of` counts at age 0 (full points) rather than being ignored. A
//! stored activity is never in the future (validation refuses it), so this only matters for
//! clock skew between writers, and it keeps the score monotone: with non-negative points the
//! score never rises as `as_of` advances. `as_of` is the moment decay is measured to, not a
//! cut-off: for the score as it stood at a past moment, pass only the activities that had
//! occurred by then. An activity without `occur_time` falls back to its `create_time`; one with
//! neither cannot be placed in time and is skipped.
//!
//! The breakdown holds one [`RuleContribution`] per engagement rule that matched at least one
//! activity (in model order; `activities` counts the matches, including those a cap cut to
//! nothing), and [`Score::score`] is computed by summing those entries in that order
//! ([`engagement_total`]), so the two cannot disagree. The score may be negative when the
//! model has negative rules.
//!
//! # Fit (the grade)
//!
//! A fit rule looks at one profile field ([`FIT_FIELDS`], or `custom_fields.<key>`). A field
//! that is empty after folding (or `company_size` 0, meaning unknown) is missing and matches no
//! operator. `tags` has many values; the rule matches when any tag does. Operators:
//!
//! - `EQUALS`: equal after [`kizuna_normalize::text_key`] (NFKC, trimmed, lower case);
//! - `CONTAINS`: the folded value contains the folded rule value;
//! - `GREATER_THAN` / `LESS_THAN`: both sides parse as numbers (after NFKC, so `１０００` is
//!   1000; `,` and `_` separators are ignored) and compare strictly; otherwise no match;
//! - `IN`: equal to one of the comma-separated items (each folded; empty items ignored).
//!
//! Matching rules add their points (breakdown entries of kind [`RuleKind::Fit`] with
//! `activities` 0). The grade compares that sum with the maximum attainable fit points, taken
//! as the sum of the positive points of the rules that can match (known field and operator):
//! **A** at 75 % or more, **B** at 50 %, **C** at 25 %, otherwise **D** ([`grade_for`]). When
//! no rule has positive points, a lead is A unless negative rules matched (then D). A model
//! without fit rules gives the empty grade.
//!
//! # Qualification
//!
//! [`Score::qualifies`] is `score >= mql_score_threshold` and, when `mql_min_grade` is set, a
//! grade at least as good (A best). An empty grade never passes a set minimum grade.
//!
//! Non-finite numbers (which validation refuses) never reach the result: a rule with
//! non-finite points never matches, and a non-finite or non-positive half-life or cap means
//! none.

use std::borrow::Cow;

use kizuna_normalize::text_key;
use kizuna_proto::leads::scoring_model::fit_rule::Operator;
use kizuna_proto::leads::scoring_model::{EngagementRule, FitRule};
use kizuna_proto::leads::{Activity, ActivityKind, Lead, ScoringModel};
use kizuna_proto::time::from_timestamp;

/// Microseconds in a day.
pub const MICROS_PER_DAY: i64 = 86_400_000_000;

/// Grades from best to worst with the share of the maximum fit points each needs; the last
/// grade (D) needs nothing.
pub const GRADE_THRESHOLDS: [(&str, f64); 4] = [("A", 0.75), ("B", 0.5), ("C", 0.25), ("D", 0.0)];

/// Profile fields a fit rule can look at, besides `custom_fields.<key>`.
pub const FIT_FIELDS: [&str; 14] = [
    "job_title",
    "industry",
    "company",
    "company_size",
    "country_code",
    "region",
    "source",
    "campaign",
    "tags",
    "utm.source",
    "utm.medium",
    "utm.campaign",
    "utm.term",
    "utm.content",
];

/// Prefix of fit fields naming a custom field.
pub const CUSTOM_FIELD_PREFIX: &str = "custom_fields.";

/// Which part of the model a breakdown entry comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RuleKind {
    /// An engagement rule: its points are part of the score.
    Engagement,
    /// A fit rule: its points count toward the grade only.
    Fit,
}

/// What one rule contributed.
#[derive(Clone, Debug, PartialEq)]
pub struct RuleContribution {
    /// The rule's `rule_id`.
    pub rule_id: String,
    /// Engagement or fit.
    pub kind: RuleKind,
    /// Engagement: capped, decayed points. Fit: the rule's points (it matched).
    pub points: f64,
    /// Engagement: activities that matched the rule (capped or not). Fit: 0.
    pub activities: u32,
}

/// A lead's score under a model at one moment, with its explanation.
#[derive(Clone, Debug, PartialEq)]
pub struct Score {
    /// Engagement score: exactly [`engagement_total`] of the breakdown.
    pub score: f64,
    /// Fit grade "A" to "D"; empty when the model has no fit rules.
    pub grade: String,
    /// Engagement rules that matched an activity (model order), then fit rules that matched
    /// (model order).
    pub breakdown: Vec<RuleContribution>,
    /// Whether score and grade pass the model's MQL thresholds.
    pub qualifies: bool,
}

impl Score {
    /// The fit points behind the grade: the sum of the fit entries of the breakdown.
    pub fn fit_points(&self) -> f64 {
        sum_of(&self.breakdown, RuleKind::Fit)
    }
}

/// The score a breakdown adds up to: its engagement entries summed in order from 0.
pub fn engagement_total(breakdown: &[RuleContribution]) -> f64 {
    sum_of(breakdown, RuleKind::Engagement)
}

fn sum_of(breakdown: &[RuleContribution], kind: RuleKind) -> f64 {
    breakdown
        .iter()
        .filter(|c| c.kind == kind)
        .fold(0.0, |sum, c| sum + c.points)
}

/// Scores `lead` with `activities` (any order) under `model` as of `as_of` (microseconds UTC).
/// To score many leads under one model, build an [`Engine`] once.
pub fn evaluate(model: &ScoringModel, lead: &Lead, activities: &[Activity], as_of: i64) -> Score {
    Engine::new(model).evaluate(lead, activities, as_of)
}

/// The grade of `fit_points` out of `max_fit_points` (see the module documentation).
pub fn grade_for(fit_points: f64, max_fit_points: f64) -> &'static str {
    if max_fit_points > 0.0 {
        GRADE_THRESHOLDS
            .iter()
            .find(|(_, share)| fit_points >= max_fit_points * share)
            .map_or("D", |(grade, _)| grade)
    } else if fit_points >= 0.0 {
        "A"
    } else {
        "D"
    }
}

/// The rank of a grade, 0 for A (best) to 3 for D; `None` for anything else.
pub fn grade_rank(grade: &str) -> Option<usize> {
    GRADE_THRESHOLDS.iter().position(|(g, _)| *g == grade)
}

/// Whether a fit rule can look at `field`.
pub fn is_fit_field(field: &str) -> bool {
    FIT_FIELDS.contains(&field)
        || field
            .strip_prefix(CUSTOM_FIELD_PREFIX)
            .is_some_and(|key| !key.is_empty())
}

/// A model prepared for scoring: rule values folded and parsed once.
#[derive(Debug)]
pub struct Engine<'m> {
    model: &'m ScoringModel,
    engagement: Vec<CompiledEngagement<'m>>,
    fit: Vec<CompiledFit<'m>>,
    /// `None`: no decay.
    half_life_days: Option<f64>,
    max_fit_points: f64,
}

/// One engagement rule prepared for matching: its conditions folded (see [`folded_key`]).
/// The engine and the incremental [`super::state`] both match and cap through this type.
#[derive(Debug)]
pub(crate) struct CompiledEngagement<'m> {
    rule: &'m EngagementRule,
    /// False when the rule can never match (no kind, non-finite points).
    usable: bool,
    url_key: Option<Cow<'m, str>>,
    property_key: Option<&'m str>,
    property_value_key: Option<Cow<'m, str>>,
    max_points: Option<f64>,
    max_points_per_day: Option<f64>,
}

/// An activity whose URL and property values are folded with [`text_key`] at most once each,
/// however many rules look at them.
#[derive(Debug)]
pub(crate) struct FoldedActivity<'a> {
    activity: &'a Activity,
    url_key: Option<String>,
    /// Folded property values by key, filled as rules ask for them.
    value_keys: Vec<(&'a str, String)>,
    /// Whether `value_keys` holds every property.
    all_values: bool,
}

#[derive(Debug)]
struct CompiledFit<'m> {
    rule: &'m FitRule,
    /// `None` when the rule can never match (unknown field or operator, non-finite points).
    operator: Option<Operator>,
    value_key: String,
    number: Option<f64>,
    items: Vec<String>,
}

/// Running totals of one engagement rule while walking the activities.
#[derive(Clone, Copy, Debug, Default)]
struct RuleState {
    day: Option<i64>,
    day_raw: f64,
    total_raw: f64,
    points: f64,
    activities: u32,
}

fn positive_cap(cap: f64) -> Option<f64> {
    (cap.is_finite() && cap > 0.0).then_some(cap)
}

/// `text_key(text)` when not empty, borrowing `text` when it is already its own key (ASCII,
/// no upper case, nothing to trim: NFKC leaves ASCII alone), so preparing a rule whose values
/// are written folded allocates nothing.
pub(crate) fn folded_key(text: &str) -> Option<Cow<'_, str>> {
    let folded = text.is_ascii()
        && !text.bytes().any(|b| b.is_ascii_uppercase())
        && text.trim().len() == text.len();
    let key = if folded {
        Cow::Borrowed(text)
    } else {
        Cow::Owned(text_key(text))
    };
    (!key.is_empty()).then_some(key)
}

/// The moment an activity is placed at: `occur_time`, else `create_time`; `None` for neither.
pub(crate) fn activity_time(activity: &Activity) -> Option<i64> {
    let time = activity
        .occur_time
        .as_ref()
        .or(activity.create_time.as_ref())?;
    Some(from_timestamp(time))
}

/// The model's half-life in days; `None` (no decay) unless finite and positive.
pub(crate) fn half_life_days(model: &ScoringModel) -> Option<f64> {
    (model.half_life_days.is_finite() && model.half_life_days > 0.0).then_some(model.half_life_days)
}

/// The factor a contribution keeps after `age` microseconds: `0.5^(age_days / half_life)`,
/// 1 for no decay or a negative age.
pub(crate) fn decay_factor(half_life_days: Option<f64>, age: i64) -> f64 {
    let Some(half_life) = half_life_days else {
        return 1.0;
    };
    let age = age.max(0);
    // Exact below 2^53 µs (285 years).
    let age_days = age as f64 / MICROS_PER_DAY as f64;
    0.5_f64.powf(age_days / half_life)
}

/// A number written in a profile field or rule value, if it is one.
fn parse_number(text: &str) -> Option<f64> {
    let key = text_key(text);
    let digits: String = key.chars().filter(|c| !matches!(c, ',' | '_')).collect();
    digits.parse::<f64>().ok().filter(|n| n.is_finite())
}

impl<'m> Engine<'m> {
    /// Prepares `model` for scoring.
    pub fn new(model: &'m ScoringModel) -> Self {
        let engagement = model
            .engagement_rules
            .iter()
            .map(CompiledEngagement::new)
            .collect();
        let fit: Vec<CompiledFit<'m>> = model
            .fit_rules
            .iter()
            .map(|rule| {
                let operator = Operator::try_from(rule.operator)
                    .ok()
                    .filter(|op| *op != Operator::Unspecified)
                    .filter(|_| rule.points.is_finite() && is_fit_field(&rule.field));
                CompiledFit {
                    rule,
                    operator,
                    value_key: text_key(&rule.value),
                    number: parse_number(&rule.value),
                    items: rule
                        .value
                        .split(',')
                        .map(text_key)
                        .filter(|item| !item.is_empty())
                        .collect(),
                }
            })
            .collect();
        let max_fit_points = fit
            .iter()
            .filter(|f| f.operator.is_some() && f.rule.points > 0.0)
            .fold(0.0, |sum, f| sum + f.rule.points);
        let half_life_days = half_life_days(model);
        Self {
            model,
            engagement,
            fit,
            half_life_days,
            max_fit_points,
        }
    }

    /// The fit points a lead matching every positive rule would have (the grade's 100 %).
    pub fn max_fit_points(&self) -> f64 {
        self.max_fit_points
    }

    /// The factor a contribution from `occur` keeps at `as_of`: `0.5^(age_days / half_life)`,
    /// 1 for no decay or an activity not older than `as_of`.
    pub fn decay(&self, occur: i64, as_of: i64) -> f64 {
        decay_factor(self.half_life_days, as_of.saturating_sub(occur))
    }

    /// The model this engine scores with.
    pub(crate) fn model(&self) -> &'m ScoringModel {
        self.model
    }

    /// The engagement rules, prepared, in model order.
    pub(crate) fn engagement_rules(&self) -> &[CompiledEngagement<'m>] {
        &self.engagement
    }

    /// The lead's fit grade, as [`Engine::evaluate`] gives it.
    pub(crate) fn grade(&self, lead: &Lead) -> String {
        if self.model.fit_rules.is_empty() {
            return String::new();
        }
        let fit: Vec<RuleContribution> = self.fit_breakdown(lead).collect();
        grade_for(sum_of(&fit, RuleKind::Fit), self.max_fit_points).to_owned()
    }

    /// Whether `score` and `grade` pass the model's MQL thresholds.
    pub(crate) fn qualifies(&self, score: f64, grade: &str) -> bool {
        score >= self.model.mql_score_threshold && self.grade_passes(grade)
    }

    /// Scores `lead` with `activities` (any order) as of `as_of` (microseconds UTC).
    pub fn evaluate(&self, lead: &Lead, activities: &[Activity], as_of: i64) -> Score {
        let mut breakdown = self.engagement_breakdown(activities, as_of);
        let score = engagement_total(&breakdown);
        let grade = if self.model.fit_rules.is_empty() {
            String::new()
        } else {
            let start = breakdown.len();
            breakdown.extend(self.fit_breakdown(lead));
            grade_for(
                sum_of(&breakdown[start..], RuleKind::Fit),
                self.max_fit_points,
            )
            .to_owned()
        };
        let qualifies = self.qualifies(score, &grade);
        Score {
            score,
            grade,
            breakdown,
            qualifies,
        }
    }

    fn grade_passes(&self, grade: &str) -> bool {
        let min = self.model.mql_min_grade.as_str();
        if min.is_empty() {
            return true;
        }
        match (grade_rank(grade), grade_rank(min)) {
            (Some(rank), Some(min_rank)) => rank <= min_rank,
            _ => false,
        }
    }

    fn engagement_breakdown(&self, activities: &[Activity], as_of: i64) -> Vec<RuleContribution> {
        let mut timeline: Vec<(i64, &Activity)> = activities
            .iter()
            .filter_map(|a| Some((activity_time(a)?, a)))
            .collect();
        timeline.sort_by(|(t1, a1), (t2, a2)| t1.cmp(t2).then_with(|| a1.name.cmp(&a2.name)));

        let mut states = vec![RuleState::default(); self.engagement.len()];
        for (occur, activity) in timeline {
            let mut folded = FoldedActivity::new(activity);
            let mut decay: Option<f64> = None;
            for (rule, state) in self.engagement.iter().zip(states.iter_mut()) {
                if !rule.matches(&mut folded) {
                    continue;
                }
                state.activities = state.activities.saturating_add(1);
                let raw = rule.earn(
                    occur,
                    &mut state.day,
                    &mut state.day_raw,
                    &mut state.total_raw,
                );
                if raw != 0.0 {
                    let factor = *decay.get_or_insert_with(|| self.decay(occur, as_of));
                    state.points += raw * factor;
                }
            }
        }
        self.engagement
            .iter()
            .zip(states)
            .filter(|(_, state)| state.activities > 0)
            .map(|(rule, state)| RuleContribution {
                rule_id: rule.rule.rule_id.clone(),
                kind: RuleKind::Engagement,
                points: state.points,
                activities: state.activities,
            })
            .collect()
    }

    fn fit_breakdown<'a>(&'a self, lead: &'a Lead) -> impl Iterator<Item = RuleContribution> + 'a {
        self.fit
            .iter()
            .filter(|rule| rule.matches(lead))
            .map(|rule| RuleContribution {
                rule_id: rule.rule.rule_id.clone(),
                kind: RuleKind::Fit,
                points: rule.rule.points,
                activities: 0,
            })
    }
}

impl<'m> CompiledEngagement<'m> {
    /// Prepares `rule`: allocates only for a condition not already written folded.
    pub(crate) fn new(rule: &'m EngagementRule) -> Self {
        Self {
            rule,
            usable: rule.points.is_finite()
                && rule.activity_kind != ActivityKind::Unspecified as i32,
            url_key: folded_key(&rule.url_contains),
            property_key: (!rule.property_key.is_empty()).then_some(rule.property_key.as_str()),
            property_value_key: folded_key(&rule.property_value),
            max_points: positive_cap(rule.max_points),
            max_points_per_day: positive_cap(rule.max_points_per_day),
        }
    }

    /// Whether the activity meets every condition.
    pub(crate) fn matches(&self, activity: &mut FoldedActivity<'_>) -> bool {
        if !self.usable || self.rule.activity_kind != activity.activity.kind {
            return false;
        }
        if let Some(needle) = &self.url_key
            && !activity.url_key().contains(needle.as_ref())
        {
            return false;
        }
        match (self.property_key, self.property_value_key.as_deref()) {
            (Some(key), Some(want)) => activity.value_key(key).is_some_and(|v| v == want),
            (Some(key), None) => activity.activity.properties.contains_key(key),
            (None, Some(want)) => activity.any_value_key(want),
            (None, None) => true,
        }
    }

    /// Applies the caps to one match on `occur`, given the rule's running cap counters (the
    /// UTC day of its previous match, the raw magnitude earned that day and over all time),
    /// and returns the raw points it earns.
    pub(crate) fn earn(
        &self,
        occur: i64,
        day: &mut Option<i64>,
        day_raw: &mut f64,
        total_raw: &mut f64,
    ) -> f64 {
        let today = occur.div_euclid(MICROS_PER_DAY);
        if *day != Some(today) {
            *day = Some(today);
            *day_raw = 0.0;
        }
        let mut allowed = self.rule.points.abs();
        if let Some(cap) = self.max_points_per_day {
            allowed = allowed.min((cap - *day_raw).max(0.0));
        }
        if let Some(cap) = self.max_points {
            allowed = allowed.min((cap - *total_raw).max(0.0));
        }
        if allowed <= 0.0 {
            return 0.0;
        }
        *day_raw += allowed;
        *total_raw += allowed;
        allowed.copysign(self.rule.points)
    }
}

impl<'a> FoldedActivity<'a> {
    /// Wraps `activity`; nothing is folded until a rule asks.
    pub(crate) fn new(activity: &'a Activity) -> Self {
        Self {
            activity,
            url_key: None,
            value_keys: Vec::new(),
            all_values: false,
        }
    }

    fn url_key(&mut self) -> &str {
        let activity = self.activity;
        self.url_key.get_or_insert_with(|| text_key(&activity.url))
    }

    /// The folded value of property `key`, if the activity has it.
    fn value_key(&mut self, key: &str) -> Option<&str> {
        let index = match self.value_keys.iter().position(|(k, _)| *k == key) {
            Some(index) => index,
            None => {
                let (key, value) = self.activity.properties.get_key_value(key)?;
                self.value_keys.push((key.as_str(), text_key(value)));
                self.value_keys.len() - 1
            }
        };
        self.value_keys.get(index).map(|(_, v)| v.as_str())
    }

    /// Whether some property's folded value is `want`.
    fn any_value_key(&mut self, want: &str) -> bool {
        if !self.all_values {
            for (key, value) in &self.activity.properties {
                if !self.value_keys.iter().any(|(k, _)| *k == key.as_str()) {
                    self.value_keys.push((key.as_str(), text_key(value)));
                }
            }
            self.all_values = true;
        }
        self.value_keys.iter().any(|(_, v)| v == want)
    }
}

impl CompiledFit<'_> {
    fn matches(&self, lead: &Lead) -> bool {
        let Some(operator) = self.operator else {
            return false;
        };
        field_values(lead, &self.rule.field)
            .iter()
            .any(|value| self.value_matches(operator, value))
    }

    fn value_matches(&self, operator: Operator, value: &str) -> bool {
        let key = text_key(value);
        if key.is_empty() {
            return false;
        }
        match operator {
            Operator::Equals => key == self.value_key,
            Operator::Contains => key.contains(self.value_key.as_str()),
            Operator::GreaterThan => self
                .number
                .zip(parse_number(&key))
                .is_some_and(|(limit, n)| n > limit),
            Operator::LessThan => self
                .number
                .zip(parse_number(&key))
                .is_some_and(|(limit, n)| n < limit),
            Operator::In => self.items.contains(&key),
            Operator::Unspecified => false,
        }
    }
}

/// The values of a profile field (several for `tags`; none when unknown or unset).
fn field_values<'a>(lead: &'a Lead, field: &str) -> Vec<Cow<'a, str>> {
    let utm = |part: fn(&'a kizuna_proto::leads::lead::Utm) -> &'a String| {
        lead.utm.as_ref().map(|u| Cow::Borrowed(part(u).as_str()))
    };
    let one = |text: &'a String| vec![Cow::Borrowed(text.as_str())];
    match field {
        "job_title" => one(&lead.job_title),
        "industry" => one(&lead.industry),
        "company" => one(&lead.company),
        "company_size" if lead.company_size > 0 => vec![Cow::Owned(lead.company_size.to_string())],
        "country_code" => one(&lead.country_code),
        "region" => one(&lead.region),
        "source" => one(&lead.source),
        "campaign" => one(&lead.campaign),
        "tags" => lead
            .tags
            .iter()
            .map(|t| Cow::Borrowed(t.as_str()))
            .collect(),
        "utm.source" => utm(|u| &u.source).into_iter().collect(),
        "utm.medium" => utm(|u| &u.medium).into_iter().collect(),
        "utm.campaign" => utm(|u| &u.campaign).into_iter().collect(),
        "utm.term" => utm(|u| &u.term).into_iter().collect(),
        "utm.content" => utm(|u| &u.content).into_iter().collect(),
        _ => field
            .strip_prefix(CUSTOM_FIELD_PREFIX)
            .and_then(|key| lead.custom_fields.get(key))
            .map(|value| vec![Cow::Borrowed(value.as_str())])
            .unwrap_or_default(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use kizuna_proto::leads::scoring_model::EngagementRule;
    use kizuna_proto::time::to_timestamp;

    pub(crate) const T0: i64 = 1_780_000_000_000_000; // 2026-05-28T20:26:40Z
    pub(crate) const HOUR: i64 = 3_600_000_000;

    /// A deterministic pseudo-random generator (SplitMix64).
    pub(crate) struct Rng(pub(crate) u64);

    impl Rng {
        pub(crate) fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        /// Uniform in `0..n` (n > 0).
        pub(crate) fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }

        pub(crate) fn chance(&mut self, percent: u64) -> bool {
            self.below(100) < percent
        }

        pub(crate) fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
            let len = u64::try_from(items.len()).expect("small");
            &items[usize::try_from(self.below(len)).expect("small")]
        }

        pub(crate) fn shuffle<T>(&mut self, items: &mut [T]) {
            for i in (1..items.len()).rev() {
                let bound = u64::try_from(i + 1).expect("small");
                let j = usize::try_from(self.below(bound)).expect("small");
                items.swap(i, j);
            }
        }
    }

    pub(crate) fn rule(id: &str, kind: ActivityKind, points: f64) -> EngagementRule {
        EngagementRule {
            rule_id: id.into(),
            activity_kind: kind as i32,
            points,
            ..Default::default()
        }
    }

    pub(crate) fn fit(
        id: &str,
        field: &str,
        operator: Operator,
        value: &str,
        points: f64,
    ) -> FitRule {
        FitRule {
            rule_id: id.into(),
            field: field.into(),
            operator: operator as i32,
            value: value.into(),
            points,
        }
    }

    pub(crate) fn model(engagement: Vec<EngagementRule>, half_life_days: f64) -> ScoringModel {
        ScoringModel {
            display_name: "test".into(),
            engagement_rules: engagement,
            half_life_days,
            ..Default::default()
        }
    }

    pub(crate) fn activity(n: usize, kind: ActivityKind, url: &str, occur: i64) -> Activity {
        Activity {
            name: format!("leads/l1/activities/a{n:04}"),
            kind: kind as i32,
            url: url.into(),
            occur_time: Some(to_timestamp(occur)),
            ..Default::default()
        }
    }

    pub(crate) fn page_views(times: &[i64]) -> Vec<Activity> {
        times
            .iter()
            .enumerate()
            .map(|(n, t)| activity(n, ActivityKind::PageView, "https://example.jp/", *t))
            .collect()
    }

    fn points_of(score: &Score, rule_id: &str) -> f64 {
        score
            .breakdown
            .iter()
            .find(|c| c.rule_id == rule_id)
            .map_or(0.0, |c| c.points)
    }

    /// Sums the engagement entries independently of `engagement_total`.
    fn independent_sum(score: &Score) -> f64 {
        let mut sum = 0.0;
        for c in &score.breakdown {
            if c.kind == RuleKind::Engagement {
                sum += c.points;
            }
        }
        sum
    }

    #[test]
    fn decay_halves_after_one_half_life_and_quarters_after_two() {
        let m = model(vec![rule("view", ActivityKind::PageView, 10.0)], 7.0);
        let acts = page_views(&[T0]);
        let lead = Lead::default();
        assert_eq!(evaluate(&m, &lead, &acts, T0).score, 10.0);
        assert_eq!(
            evaluate(&m, &lead, &acts, T0 + 7 * MICROS_PER_DAY).score,
            5.0
        );
        assert_eq!(
            evaluate(&m, &lead, &acts, T0 + 14 * MICROS_PER_DAY).score,
            2.5
        );
        let half_day = evaluate(&m, &lead, &acts, T0 + 7 * MICROS_PER_DAY / 2).score;
        assert!((half_day - 10.0 / 2_f64.sqrt()).abs() < 1e-12, "{half_day}");
        // Half-life 0: no decay at all.
        let flat = model(vec![rule("view", ActivityKind::PageView, 10.0)], 0.0);
        assert_eq!(
            evaluate(&flat, &lead, &acts, T0 + 3650 * MICROS_PER_DAY).score,
            10.0
        );
    }

    #[test]
    fn each_contribution_decays_by_its_own_age() {
        let m = model(vec![rule("view", ActivityKind::PageView, 8.0)], 1.0);
        let acts = page_views(&[T0, T0 + MICROS_PER_DAY, T0 + 2 * MICROS_PER_DAY]);
        let s = evaluate(&m, &Lead::default(), &acts, T0 + 2 * MICROS_PER_DAY);
        assert_eq!(s.score, 2.0 + 4.0 + 8.0);
        assert_eq!(s.breakdown[0].activities, 3);
    }

    #[test]
    fn future_activities_count_at_age_zero_and_timeless_ones_are_skipped() {
        let m = model(vec![rule("view", ActivityKind::PageView, 10.0)], 1.0);
        let mut acts = page_views(&[T0 + 5 * MICROS_PER_DAY]);
        assert_eq!(evaluate(&m, &Lead::default(), &acts, T0).score, 10.0);
        acts.push(Activity {
            name: "leads/l1/activities/none".into(),
            kind: ActivityKind::PageView as i32,
            ..Default::default()
        });
        let s = evaluate(&m, &Lead::default(), &acts, T0);
        assert_eq!((s.score, s.breakdown[0].activities), (10.0, 1));
        // create_time stands in for a missing occur_time.
        acts.push(Activity {
            name: "leads/l1/activities/created".into(),
            kind: ActivityKind::PageView as i32,
            create_time: Some(to_timestamp(T0 - MICROS_PER_DAY)),
            ..Default::default()
        });
        assert_eq!(evaluate(&m, &Lead::default(), &acts, T0).score, 15.0);
    }

    #[test]
    fn breakdown_sums_exactly_to_the_score() {
        let mut pricing = rule("pricing", ActivityKind::PageView, 0.7);
        pricing.url_contains = "/pricing".into();
        let m = ScoringModel {
            fit_rules: vec![fit("jp", "country_code", Operator::Equals, "JP", 33.3)],
            ..model(
                vec![
                    rule("view", ActivityKind::PageView, 0.1),
                    pricing,
                    rule("open", ActivityKind::EmailOpen, 3.3),
                    rule("unsub", ActivityKind::EmailClick, -1.9),
                ],
                3.7,
            )
        };
        let mut acts = Vec::new();
        for n in 0..40 {
            let kind = [
                ActivityKind::PageView,
                ActivityKind::EmailOpen,
                ActivityKind::EmailClick,
            ][n % 3];
            let url = if n % 4 == 0 {
                "https://x.jp/pricing"
            } else {
                "https://x.jp/"
            };
            let when = T0 + i64::try_from(n).expect("small") * 7 * HOUR;
            acts.push(activity(n, kind, url, when));
        }
        let lead = Lead {
            country_code: "JP".into(),
            ..Default::default()
        };
        let s = evaluate(&m, &lead, &acts, T0 + 30 * MICROS_PER_DAY);
        assert_eq!(s.breakdown.len(), 5);
        assert_eq!(s.score, engagement_total(&s.breakdown));
        assert_eq!(s.score, independent_sum(&s));
        assert_eq!(s.fit_points(), 33.3, "fit points stay out of the score");
        assert_eq!(s.grade, "A");
    }

    #[test]
    fn per_day_cap_limits_raw_points_per_utc_day() {
        let mut r = rule("view", ActivityKind::PageView, 10.0);
        r.max_points_per_day = 25.0;
        let m = model(vec![r], 0.0);
        let day = T0.div_euclid(MICROS_PER_DAY) * MICROS_PER_DAY; // midnight UTC
        let mut times: Vec<i64> = (1..=5).map(|h| day + h * HOUR).collect();
        times.extend([day + MICROS_PER_DAY + HOUR, day + MICROS_PER_DAY + 2 * HOUR]);
        let s = evaluate(
            &m,
            &Lead::default(),
            &page_views(&times),
            day + 3 * MICROS_PER_DAY,
        );
        assert_eq!(s.score, 25.0 + 20.0);
        assert_eq!(s.breakdown[0].activities, 7);
        // The day boundary is UTC midnight: 23:59:59.999999 and 00:00 are two days.
        let edge = page_views(&[day - 1, day - 2, day - 3, day, day + 1, day + 2]);
        assert_eq!(
            evaluate(&m, &Lead::default(), &edge, day + MICROS_PER_DAY).score,
            50.0
        );
    }

    #[test]
    fn total_cap_keeps_the_oldest_contributions_then_decays_each() {
        let mut r = rule("view", ActivityKind::PageView, 10.0);
        r.max_points = 30.0;
        let flat = model(vec![r.clone()], 0.0);
        let times: Vec<i64> = (0..5).map(|d| T0 + d * MICROS_PER_DAY).collect();
        let acts = page_views(&times);
        let as_of = T0 + 4 * MICROS_PER_DAY;
        assert_eq!(evaluate(&flat, &Lead::default(), &acts, as_of).score, 30.0);
        // Days 0, 1, 2 fill the cap; at day 4 with a one-day half-life they are worth
        // 10/16 + 10/8 + 10/4; days 3 and 4 earn nothing.
        let decaying = model(vec![r.clone()], 1.0);
        let s = evaluate(&decaying, &Lead::default(), &acts, as_of);
        assert_eq!(s.score, 0.625 + 1.25 + 2.5);
        assert_eq!(s.breakdown[0].activities, 5);
        // A cap that is not a multiple of the points: the crossing match earns the remainder.
        r.max_points = 25.0;
        r.max_points_per_day = 0.0;
        let partial = model(vec![r], 0.0);
        assert_eq!(
            evaluate(&partial, &Lead::default(), &acts, as_of).score,
            25.0
        );
    }

    #[test]
    fn both_caps_together_and_negative_points_are_capped_by_magnitude() {
        let mut r = rule("view", ActivityKind::PageView, 10.0);
        r.max_points_per_day = 15.0;
        r.max_points = 40.0;
        let m = model(vec![r], 0.0);
        let times: Vec<i64> = (0..4)
            .flat_map(|d| (0..3).map(move |h| T0 + d * MICROS_PER_DAY + h))
            .collect();
        // 15 per day for three days is 45, capped at 40.
        let acts = page_views(&times);
        assert_eq!(
            evaluate(&m, &Lead::default(), &acts, T0 + 9 * MICROS_PER_DAY).score,
            40.0
        );

        let mut neg = rule("bounce", ActivityKind::PageView, -10.0);
        neg.max_points = 25.0;
        let m = model(vec![neg], 0.0);
        assert_eq!(
            evaluate(&m, &Lead::default(), &acts, T0 + 9 * MICROS_PER_DAY).score,
            -25.0
        );
    }

    #[test]
    fn out_of_order_input_gives_identical_results() {
        let mut capped = rule("view", ActivityKind::PageView, 3.0);
        capped.max_points_per_day = 7.0;
        capped.max_points = 40.0;
        let m = model(
            vec![capped, rule("open", ActivityKind::EmailOpen, 1.3)],
            5.5,
        );
        let mut rng = Rng(42);
        let mut acts: Vec<Activity> = (0..200)
            .map(|n| {
                let kind = *rng.pick(&[ActivityKind::PageView, ActivityKind::EmailOpen]);
                let when = T0 + i64::try_from(rng.below(30 * 24)).expect("small") * HOUR;
                activity(n, kind, "https://example.jp/", when)
            })
            .collect();
        let as_of = T0 + 40 * MICROS_PER_DAY;
        let expected = evaluate(&m, &Lead::default(), &acts, as_of);
        for _ in 0..20 {
            rng.shuffle(&mut acts);
            assert_eq!(evaluate(&m, &Lead::default(), &acts, as_of), expected);
        }
        acts.reverse();
        assert_eq!(evaluate(&m, &Lead::default(), &acts, as_of), expected);
    }

    #[test]
    fn url_contains_matches_full_width_and_case() {
        let mut pricing = rule("pricing", ActivityKind::PageView, 5.0);
        pricing.url_contains = "/pricing".into();
        let mut wide_rule = rule("wide", ActivityKind::PageView, 1.0);
        wide_rule.url_contains = "／ＰＲＩＣＩＮＧ".into();
        let m = model(vec![pricing, wide_rule], 0.0);
        let lead = Lead::default();
        for url in [
            "https://example.jp/pricing",
            "ｈｔｔｐｓ://ｅｘａｍｐｌｅ.ｊｐ/ＰＲＩＣＩＮＧ/plan",
            "https://EXAMPLE.jp/Pricing?x=1",
        ] {
            let acts = [activity(0, ActivityKind::PageView, url, T0)];
            assert_eq!(evaluate(&m, &lead, &acts, T0).score, 6.0, "{url}");
        }
        for url in [
            "https://example.jp/price",
            "",
            "https://example.jp/p r i c i n g",
        ] {
            let acts = [activity(0, ActivityKind::PageView, url, T0)];
            let s = evaluate(&m, &lead, &acts, T0);
            assert!(s.breakdown.is_empty(), "{url}: {s:?}");
        }
        // The kind must match too.
        let acts = [activity(
            0,
            ActivityKind::EmailClick,
            "https://example.jp/pricing",
            T0,
        )];
        assert_eq!(evaluate(&m, &lead, &acts, T0).score, 0.0);
    }

    #[test]
    fn property_conditions() {
        let mut keyed = rule("keyed", ActivityKind::FormSubmit, 1.0);
        keyed.property_key = "form_id".into();
        let mut valued = rule("valued", ActivityKind::FormSubmit, 10.0);
        valued.property_key = "form_id".into();
        valued.property_value = "Demo-Request".into();
        let mut any_key = rule("any_key", ActivityKind::FormSubmit, 100.0);
        any_key.property_value = "ｄｅｍｏ-request".into();
        let m = model(vec![keyed, valued, any_key], 0.0);
        let form = |props: &[(&str, &str)]| {
            let mut a = activity(0, ActivityKind::FormSubmit, "", T0);
            a.properties = props
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect();
            [a]
        };
        let score = |props: &[(&str, &str)]| evaluate(&m, &Lead::default(), &form(props), T0).score;
        assert_eq!(score(&[]), 0.0);
        assert_eq!(score(&[("form_id", "contact")]), 1.0);
        assert_eq!(score(&[("form_id", "demo-request")]), 111.0);
        assert_eq!(
            score(&[("Form_ID", "demo-request")]),
            100.0,
            "keys are exact"
        );
        assert_eq!(score(&[("other", "DEMO-REQUEST")]), 100.0);
    }

    #[test]
    fn fit_operators_over_profile_fields() {
        let lead = Lead {
            job_title: "ＩＴ部長 (Manager)".into(),
            industry: "Manufacturing".into(),
            company_size: 1200,
            country_code: "JP".into(),
            region: "東京都".into(),
            source: "form".into(),
            campaign: "Spring-2026".into(),
            tags: vec!["vip".into(), "Webinar".into()],
            custom_fields: [
                ("budget".to_owned(), "１，０００，０００".to_owned()),
                ("plan".to_owned(), "Enterprise".to_owned()),
            ]
            .into_iter()
            .collect(),
            ..Default::default()
        };
        let cases = [
            (
                fit("r", "job_title", Operator::Contains, "it部長", 1.0),
                true,
            ),
            (
                fit("r", "job_title", Operator::Contains, "manager", 1.0),
                true,
            ),
            (
                fit("r", "job_title", Operator::Equals, "it部長", 1.0),
                false,
            ),
            (
                fit("r", "industry", Operator::Equals, " manufacturing ", 1.0),
                true,
            ),
            (
                fit(
                    "r",
                    "industry",
                    Operator::In,
                    "finance, MANUFACTURING ,retail",
                    1.0,
                ),
                true,
            ),
            (
                fit("r", "industry", Operator::In, "finance,retail", 1.0),
                false,
            ),
            (
                fit("r", "company_size", Operator::GreaterThan, "1000", 1.0),
                true,
            ),
            (
                fit("r", "company_size", Operator::GreaterThan, "1200", 1.0),
                false,
            ),
            (
                fit("r", "company_size", Operator::LessThan, "1,201", 1.0),
                true,
            ),
            (
                fit("r", "company_size", Operator::LessThan, "many", 1.0),
                false,
            ),
            (fit("r", "country_code", Operator::Equals, "jp", 1.0), true),
            (fit("r", "region", Operator::In, "大阪府,東京都", 1.0), true),
            (fit("r", "source", Operator::Equals, "import", 1.0), false),
            (
                fit("r", "campaign", Operator::Contains, "spring", 1.0),
                true,
            ),
            (fit("r", "tags", Operator::Equals, "WEBINAR", 1.0), true),
            (fit("r", "tags", Operator::Equals, "partner", 1.0), false),
            (
                fit(
                    "r",
                    "custom_fields.budget",
                    Operator::GreaterThan,
                    "999999",
                    1.0,
                ),
                true,
            ),
            (
                fit(
                    "r",
                    "custom_fields.plan",
                    Operator::In,
                    "pro,enterprise",
                    1.0,
                ),
                true,
            ),
            (
                fit("r", "custom_fields.missing", Operator::Contains, "", 1.0),
                false,
            ),
            (
                fit("r", "unknown_field", Operator::Contains, "", 1.0),
                false,
            ),
            (
                fit("r", "industry", Operator::Unspecified, "manufacturing", 1.0),
                false,
            ),
        ];
        for (rule, expected) in cases {
            let m = ScoringModel {
                fit_rules: vec![rule.clone()],
                ..Default::default()
            };
            let s = evaluate(&m, &lead, &[], T0);
            assert_eq!(s.breakdown.len() == 1, expected, "{rule:?}");
        }
        // A missing field matches no operator, not even LESS_THAN.
        let m = ScoringModel {
            fit_rules: vec![fit("r", "company_size", Operator::LessThan, "10", 1.0)],
            ..Default::default()
        };
        assert!(evaluate(&m, &Lead::default(), &[], T0).breakdown.is_empty());
    }

    #[test]
    fn grade_thresholds() {
        assert_eq!(grade_for(100.0, 100.0), "A");
        assert_eq!(grade_for(75.0, 100.0), "A");
        assert_eq!(grade_for(74.999, 100.0), "B");
        assert_eq!(grade_for(50.0, 100.0), "B");
        assert_eq!(grade_for(49.999, 100.0), "C");
        assert_eq!(grade_for(25.0, 100.0), "C");
        assert_eq!(grade_for(24.999, 100.0), "D");
        assert_eq!(grade_for(0.0, 100.0), "D");
        assert_eq!(grade_for(-5.0, 100.0), "D");
        assert_eq!(grade_for(0.0, 0.0), "A");
        assert_eq!(grade_for(-1.0, 0.0), "D");

        // Through a model: max attainable = 60 + 20 + 20 = 100 (negative rule excluded).
        let m = ScoringModel {
            fit_rules: vec![
                fit("it", "industry", Operator::Equals, "it", 60.0),
                fit("big", "company_size", Operator::GreaterThan, "500", 20.0),
                fit("jp", "country_code", Operator::Equals, "JP", 20.0),
                fit("student", "job_title", Operator::Contains, "student", -50.0),
            ],
            ..Default::default()
        };
        assert_eq!(Engine::new(&m).max_fit_points(), 100.0);
        let grade = |industry: &str, size: i32, country: &str, title: &str| {
            let lead = Lead {
                industry: industry.into(),
                company_size: size,
                country_code: country.into(),
                job_title: title.into(),
                ..Default::default()
            };
            evaluate(&m, &lead, &[], T0).grade
        };
        assert_eq!(grade("IT", 1000, "JP", ""), "A");
        assert_eq!(grade("IT", 1000, "", ""), "A"); // 80
        assert_eq!(grade("IT", 0, "", ""), "B"); // 60
        assert_eq!(grade("", 1000, "JP", ""), "C"); // 40
        assert_eq!(grade("", 1000, "", ""), "D"); // 20
        assert_eq!(grade("IT", 1000, "JP", "Student"), "B"); // 50
        assert_eq!(grade("", 0, "", ""), "D");
        // No fit rules: no grade.
        let s = evaluate(&model(vec![], 0.0), &Lead::default(), &[], T0);
        assert_eq!(s.grade, "");
    }

    #[test]
    fn qualifies_boundaries() {
        let base = ScoringModel {
            mql_score_threshold: 10.0,
            fit_rules: vec![
                fit("it", "industry", Operator::Equals, "it", 50.0),
                fit("jp", "country_code", Operator::Equals, "JP", 50.0),
            ],
            ..model(vec![rule("view", ActivityKind::PageView, 5.0)], 0.0)
        };
        let lead_a = Lead {
            industry: "it".into(),
            country_code: "JP".into(),
            ..Default::default()
        };
        let lead_b = Lead {
            industry: "it".into(),
            ..Default::default()
        };
        let lead_d = Lead::default();
        let two = page_views(&[T0, T0 + 1]);
        let one = page_views(&[T0]);
        let check = |min: &str, lead: &Lead, acts: &[Activity]| {
            let m = ScoringModel {
                mql_min_grade: min.into(),
                ..base.clone()
            };
            evaluate(&m, lead, acts, T0).qualifies
        };
        // Score exactly at the threshold qualifies; below does not.
        assert!(check("", &lead_d, &two));
        assert!(!check("", &lead_a, &one));
        // Minimum grade B: A and B pass, D does not.
        assert!(check("B", &lead_a, &two));
        assert!(check("B", &lead_b, &two));
        assert!(!check("B", &lead_d, &two));
        assert!(!check("A", &lead_b, &two));
        assert!(check("D", &lead_d, &two));
        // Exactly at the threshold at the moment of the activities, below it 1 µs later.
        let decaying = ScoringModel {
            half_life_days: 30.0,
            ..base.clone()
        };
        let same_time = page_views(&[T0, T0]);
        assert!(evaluate(&decaying, &lead_a, &same_time, T0).qualifies);
        assert!(!evaluate(&decaying, &lead_a, &same_time, T0 + 1).qualifies);
        // A minimum grade with no fit rules can never pass.
        let ungraded = ScoringModel {
            fit_rules: vec![],
            mql_min_grade: "D".into(),
            ..base
        };
        let s = evaluate(&ungraded, &lead_a, &two, T0);
        assert_eq!((s.score, s.grade.as_str(), s.qualifies), (10.0, "", false));
    }

    #[test]
    fn non_finite_numbers_never_reach_the_score() {
        let mut bad_cap = rule("cap", ActivityKind::PageView, 2.0);
        bad_cap.max_points = f64::NAN;
        let m = model(
            vec![rule("nan", ActivityKind::PageView, f64::NAN), bad_cap],
            f64::INFINITY,
        );
        let s = evaluate(
            &m,
            &Lead::default(),
            &page_views(&[T0, T0 + 1]),
            T0 + MICROS_PER_DAY,
        );
        assert_eq!(s.score, 4.0);
    }

    /// Many random models and activity sets: the score is the breakdown's sum, never negative
    /// with non-negative points, never rising as time passes, never above a rule's cap, and
    /// independent of input order.
    #[test]
    fn properties_over_random_activity_sets() {
        let kinds = [
            ActivityKind::PageView,
            ActivityKind::EmailOpen,
            ActivityKind::FormSubmit,
        ];
        let urls = [
            "https://a.jp/pricing",
            "https://a.jp/ＤＯＣＳ/x",
            "https://b.jp/",
            "",
        ];
        let mut rng = Rng(0x5EED);
        for round in 0..400 {
            let rules: Vec<EngagementRule> = (0..1 + rng.below(5))
                .map(|i| {
                    let mut r = rule(&format!("r{i}"), *rng.pick(&kinds), 0.0);
                    r.points = f64::from(u32::try_from(rng.below(2000)).expect("small")) / 100.0;
                    if rng.chance(40) {
                        r.max_points_per_day =
                            f64::from(u32::try_from(rng.below(30)).expect("small"));
                    }
                    if rng.chance(40) {
                        r.max_points = f64::from(u32::try_from(rng.below(80)).expect("small"));
                    }
                    if rng.chance(30) {
                        r.url_contains = (*rng.pick(&["/pricing", "docs", "b.jp"])).into();
                    }
                    if rng.chance(20) {
                        r.property_key = "form_id".into();
                    }
                    r
                })
                .collect();
            let half_life = if rng.chance(20) {
                0.0
            } else {
                f64::from(u32::try_from(1 + rng.below(600)).expect("small")) / 20.0
            };
            let m = model(rules, half_life);
            let mut acts: Vec<Activity> = (0..rng.below(60))
                .map(|n| {
                    let offset =
                        i64::try_from(rng.below(60 * 24 * 60)).expect("small") * 60_000_000;
                    let kind = *rng.pick(&kinds);
                    let url = *rng.pick::<&str>(&urls);
                    let mut a =
                        activity(usize::try_from(n).expect("small"), kind, url, T0 + offset);
                    if rng.chance(50) {
                        a.properties.insert("form_id".into(), "f".into());
                    }
                    a
                })
                .collect();
            let engine = Engine::new(&m);
            let lead = Lead::default();
            let mut previous: Option<Score> = None;
            for step in 0..8 {
                // From before the first activity to well after the last.
                let as_of = T0 - MICROS_PER_DAY + step * 10 * MICROS_PER_DAY;
                let s = engine.evaluate(&lead, &acts, as_of);
                assert_eq!(s.score, engagement_total(&s.breakdown), "round {round}");
                assert_eq!(s.score, independent_sum(&s), "round {round}");
                assert!(s.score >= 0.0, "round {round}: {s:?}");
                for (c, r) in s.breakdown.iter().filter_map(|c| {
                    m.engagement_rules
                        .iter()
                        .find(|r| r.rule_id == c.rule_id)
                        .map(|r| (c, r))
                }) {
                    assert!(c.points <= r.points * f64::from(c.activities) + 1e-9);
                    if r.max_points > 0.0 {
                        assert!(c.points <= r.max_points + 1e-9, "round {round}: {c:?}");
                    }
                }
                if let Some(before) = &previous {
                    assert!(s.score <= before.score, "round {round} step {step}: rose");
                    for c in &s.breakdown {
                        assert!(c.points <= points_of(before, &c.rule_id), "round {round}");
                    }
                }
                previous = Some(s);
            }
            let as_of = T0 + 61 * MICROS_PER_DAY;
            let expected = engine.evaluate(&lead, &acts, as_of);
            rng.shuffle(&mut acts);
            assert_eq!(
                engine.evaluate(&lead, &acts, as_of),
                expected,
                "round {round}"
            );
        }
    }
}
