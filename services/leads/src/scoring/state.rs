//! Incremental engagement scoring: a small per-lead [`ScoreState`] that absorbs activities one
//! at a time, in chronological order, and gives the same score as [`engine::evaluate`](super::engine::evaluate) over all
//! of them, without re-reading a lead's history for every new activity.
//!
//! # How it maps to the engine
//!
//! The engine walks a lead's activities oldest first (by time, then resource name) and, per
//! engagement rule, lets each match earn raw points within the caps (per UTC day, then in
//! total), each surviving contribution then decaying by its own age at `as_of`. The caps depend
//! only on the order of the matches, never on `as_of`, so they can be applied as activities
//! arrive. Per rule ([`RuleState`]) the state keeps:
//!
//! - the cap counters the engine keeps while walking: the UTC day of the previous match, the
//!   raw magnitude earned that day and over all time (the same code applies the caps);
//! - the number of matches (the breakdown's `activities`);
//! - the decayed sum `Σ raw × 0.5^((decayed_at − t) / half_life)` of the contributions, anchored
//!   at [`ScoreState::decayed_at`], the time of the latest applied activity. Advancing to a
//!   later activity multiplies every sum by `0.5^((t − decayed_at) / half_life)`; the score at
//!   `as_of` multiplies by `0.5^((as_of − decayed_at) / half_life)`. Exponents are always
//!   relative to recent times, never to the epoch. Half-life 0 (or anything not finite and
//!   positive) means no decay, as in the engine.
//!
//! The score is the sum, in model order, of the rules that matched at least one activity,
//! exactly as the engine sums its breakdown. The only difference from the engine is rounding:
//! multiplying the decay factors step by step instead of once per contribution, so results
//! agree to about 1e-13 relative (or absolute, for scores cancelling to near 0). Activities with
//! the same time may be applied in any order: within a rule every match earns the same points,
//! so the sequence of capped amounts does not depend on which of them comes first.
//!
//! Activities are matched by the engine's own code (`engine::CompiledEngagement`), and each
//! activity's URL and property values are folded at most once whatever the number of rules.
//! [`ScoreState::apply`] prepares each rule on the fly, which allocates nothing when the rule's
//! `url_contains` and `property_value` are already written folded (ASCII, lower case,
//! trimmed); to apply many activities, [`ScoreState::apply_prepared`] takes an [`Engine`]
//! built once.
//!
//! # Out-of-order activities
//!
//! A state is valid for one model name and revision ([`ScoreState::is_for`]) and can only move
//! forward in time: an activity can be applied when its time is at or after
//! [`ScoreState::anchor`] ([`ScoreState::accepts`]). When `accepts` or `is_for` is false, the
//! caller must rebuild the state with [`ScoreState::from_activities`] from all of the lead's
//! counted activities. Applying an activity anyway (too old, or under another model) does not
//! guess: it marks the state [`stale`](ScoreState::stale), after which it accepts nothing,
//! belongs to no model and gives no score until rebuilt. Raising `anchor` by hand (to forbid
//! incremental application at or before some moment) is safe: the decayed sums refer to
//! `decayed_at`, not to `anchor`. For `as_of` before the anchor, [`ScoreState::engagement`]
//! gives `None` and the caller falls back to [`engine::evaluate`](super::engine::evaluate).

use std::borrow::Borrow;

use kizuna_proto::leads::{Activity, Lead, ScoringModel};

use super::engine::{
    CompiledEngagement, Engine, FoldedActivity, activity_time, decay_factor, half_life_days,
};

/// A lead's incremental engagement state, stored per lead (encoded with prost), valid for one
/// model name and revision.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ScoreState {
    /// The model's resource name (`ScoringModel.name`).
    #[prost(string, tag = "1")]
    pub model: String,
    /// The model's revision.
    #[prost(int32, tag = "2")]
    pub revision: i32,
    /// Microseconds UTC: time of the latest applied activity (`i64::MIN` when none); nothing
    /// older can be applied.
    #[prost(int64, tag = "3")]
    pub anchor: i64,
    /// One entry per engagement rule, in model order.
    #[prost(message, repeated, tag = "4")]
    pub rules: Vec<RuleState>,
    /// Microseconds UTC the rules' decayed sums refer to: the time of the latest applied
    /// activity (`i64::MIN` when none). Equal to `anchor` unless the anchor was raised by hand.
    #[prost(int64, tag = "5")]
    pub decayed_at: i64,
    /// Set when an activity could not be applied in order (or under another model): the
    /// state must be rebuilt with [`ScoreState::from_activities`].
    #[prost(bool, tag = "6")]
    pub stale: bool,
}

/// The running totals of one engagement rule.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RuleState {
    /// Capped contributions, each decayed to `ScoreState::decayed_at`, summed oldest first.
    #[prost(double, tag = "1")]
    pub decayed: f64,
    /// Raw magnitude earned over all time (for `max_points`).
    #[prost(double, tag = "2")]
    pub total_raw: f64,
    /// The UTC day (days since the epoch) of the latest match (for `max_points_per_day`).
    #[prost(int64, optional, tag = "3")]
    pub day: Option<i64>,
    /// Raw magnitude earned on `day`.
    #[prost(double, tag = "4")]
    pub day_raw: f64,
    /// Activities that matched the rule, capped or not.
    #[prost(uint32, tag = "5")]
    pub activities: u32,
}

impl ScoreState {
    /// An empty state for `model`: no activities, score 0.
    pub fn new(model: &ScoringModel) -> Self {
        Self {
            model: model.name.clone(),
            revision: model.revision,
            anchor: i64::MIN,
            rules: vec![RuleState::default(); model.engagement_rules.len()],
            decayed_at: i64::MIN,
            stale: false,
        }
    }

    /// Built from all of a lead's counted activities in any order (sorted like the engine:
    /// by time, then name; activities without a time are skipped).
    pub fn from_activities(model: &ScoringModel, activities: &[Activity]) -> Self {
        let mut timeline: Vec<(i64, &Activity)> = activities
            .iter()
            .filter_map(|a| Some((activity_time(a)?, a)))
            .collect();
        timeline.sort_by(|(t1, a1), (t2, a2)| t1.cmp(t2).then_with(|| a1.name.cmp(&a2.name)));
        let engine = Engine::new(model);
        let mut state = Self::new(model);
        for (_, activity) in timeline {
            state.apply_prepared(&engine, activity);
        }
        state
    }

    /// Whether this state belongs to `model` (same name, revision and rule count) and is not
    /// stale.
    pub fn is_for(&self, model: &ScoringModel) -> bool {
        !self.stale
            && self.model == model.name
            && self.revision == model.revision
            && self.rules.len() == model.engagement_rules.len()
    }

    /// Whether an activity at `time` (microseconds UTC) can be applied incrementally:
    /// `time >= anchor` and the state is not stale.
    pub fn accepts(&self, time: i64) -> bool {
        !self.stale && time >= self.anchor
    }

    /// Applies one activity (the caller checked [`accepts`](Self::accepts) and
    /// [`is_for`](Self::is_for)); an activity without a time is skipped like the engine does.
    /// An activity the state cannot take marks it stale (see the module documentation).
    pub fn apply(&mut self, model: &ScoringModel, activity: &Activity) {
        self.apply_rules(
            model,
            activity,
            model.engagement_rules.iter().map(CompiledEngagement::new),
        );
    }

    /// [`apply`](Self::apply) with the model prepared once, for applying many activities.
    pub fn apply_prepared(&mut self, engine: &Engine<'_>, activity: &Activity) {
        self.apply_rules(engine.model(), activity, engine.engagement_rules().iter());
    }

    fn apply_rules<'m, R>(
        &mut self,
        model: &ScoringModel,
        activity: &Activity,
        rules: impl Iterator<Item = R>,
    ) where
        R: Borrow<CompiledEngagement<'m>>,
    {
        let Some(time) = activity_time(activity) else {
            return;
        };
        if !self.is_for(model) || !self.accepts(time) {
            self.stale = true;
            return;
        }
        self.advance(half_life_days(model), time);
        self.anchor = time;
        let mut folded = FoldedActivity::new(activity);
        for (rule, state) in rules.zip(self.rules.iter_mut()) {
            let rule = rule.borrow();
            if !rule.matches(&mut folded) {
                continue;
            }
            state.activities = state.activities.saturating_add(1);
            let raw = rule.earn(
                time,
                &mut state.day,
                &mut state.day_raw,
                &mut state.total_raw,
            );
            if raw != 0.0 {
                state.decayed += raw;
            }
        }
    }

    /// Moves the decayed sums' reference time forward to `time`.
    fn advance(&mut self, half_life: Option<f64>, time: i64) {
        if time <= self.decayed_at {
            return;
        }
        if half_life.is_some() && self.rules.iter().any(|r| r.decayed != 0.0) {
            let factor = decay_factor(half_life, time.saturating_sub(self.decayed_at));
            for rule in &mut self.rules {
                rule.decayed *= factor;
            }
        }
        self.decayed_at = time;
    }

    /// The engagement score at `as_of` (microseconds UTC); `None` when `as_of` is before the
    /// anchor or the state does not belong to `model` (the caller then falls back to
    /// [`engine::evaluate`](super::engine::evaluate)).
    pub fn engagement(&self, model: &ScoringModel, as_of: i64) -> Option<f64> {
        if !self.is_for(model) || as_of < self.anchor {
            return None;
        }
        let factor = decay_factor(half_life_days(model), as_of.saturating_sub(self.decayed_at));
        Some(
            self.rules
                .iter()
                .filter(|r| r.activities > 0)
                .fold(0.0, |sum, r| sum + r.decayed * factor),
        )
    }
}

/// Score, grade and whether the lead qualifies, from the state, as [`engine::evaluate`](super::engine::evaluate) gives
/// them (the grade from the fit rules on the lead's profile); `None` when
/// [`ScoreState::engagement`] is `None`.
pub fn score_from_state(
    model: &ScoringModel,
    lead: &Lead,
    state: &ScoreState,
    as_of: i64,
) -> Option<(f64, String, bool)> {
    let score = state.engagement(model, as_of)?;
    let engine = Engine::new(model);
    let grade = engine.grade(lead);
    let qualifies = engine.qualifies(score, &grade);
    Some((score, grade, qualifies))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scoring::engine;
    use crate::scoring::engine::MICROS_PER_DAY;
    use crate::scoring::engine::tests::{HOUR, Rng, T0, activity, fit, model, page_views, rule};
    use kizuna_normalize::text_key;
    use kizuna_proto::leads::ActivityKind;
    use kizuna_proto::leads::scoring_model::fit_rule::Operator;
    use prost::Message as _;

    fn small(n: u64) -> f64 {
        f64::from(u32::try_from(n).expect("small"))
    }

    fn close(a: f64, b: f64) -> bool {
        let diff = (a - b).abs();
        diff <= 1e-9 || diff <= 1e-9 * a.abs().max(b.abs())
    }

    fn named(mut m: ScoringModel) -> ScoringModel {
        m.name = "scoringModels/m1".into();
        m.revision = 3;
        m
    }

    fn applied(m: &ScoringModel, acts: &[Activity]) -> ScoreState {
        let mut state = ScoreState::new(m);
        for a in acts {
            let time = activity_time(a).expect("timed");
            assert!(state.accepts(time));
            state.apply(m, a);
        }
        state
    }

    /// A random model with every kind of condition and cap, negative points and sometimes no
    /// decay, plus fit rules and MQL thresholds.
    fn random_model(rng: &mut Rng) -> ScoringModel {
        let kinds = [
            ActivityKind::PageView,
            ActivityKind::EmailOpen,
            ActivityKind::FormSubmit,
        ];
        let rules = (0..1 + rng.below(6))
            .map(|i| {
                let mut r = rule(&format!("r{i}"), *rng.pick(&kinds), 0.0);
                r.points = small(rng.below(2000)) / 100.0;
                if rng.chance(25) {
                    r.points = -r.points;
                }
                if rng.chance(40) {
                    r.max_points_per_day = small(rng.below(30));
                }
                if rng.chance(40) {
                    r.max_points = small(rng.below(80));
                }
                if rng.chance(30) {
                    r.url_contains =
                        (*rng.pick(&["/pricing", "ＤＯＣＳ", " b.jp ", "docs"])).into();
                }
                if rng.chance(25) {
                    r.property_key = "form_id".into();
                }
                if rng.chance(25) {
                    r.property_value = (*rng.pick(&["demo", "ＤＥＭＯ", "f"])).into();
                }
                r
            })
            .collect();
        let half_life = if rng.chance(20) {
            0.0
        } else {
            small(1 + rng.below(600)) / 20.0
        };
        let mut m = named(model(rules, half_life));
        if rng.chance(60) {
            m.fit_rules = vec![
                fit("it", "industry", Operator::Equals, "it", 50.0),
                fit("jp", "country_code", Operator::Equals, "JP", 30.0),
                fit("st", "job_title", Operator::Contains, "student", -40.0),
            ];
        }
        m.mql_score_threshold = small(rng.below(60));
        m.mql_min_grade = (*rng.pick(&["", "A", "B", "C", "D"])).into();
        m
    }

    fn random_activities(rng: &mut Rng) -> Vec<Activity> {
        let kinds = [
            ActivityKind::PageView,
            ActivityKind::EmailOpen,
            ActivityKind::FormSubmit,
            ActivityKind::EmailClick,
        ];
        let urls = [
            "https://a.jp/pricing",
            "https://a.jp/ＤＯＣＳ/x",
            "https://B.jp/",
            "",
        ];
        let mut last = 0;
        (0..rng.below(80))
            .map(|n| {
                // Often several at the same moment or the same day.
                let offset = if rng.chance(25) {
                    last
                } else {
                    i64::try_from(rng.below(60 * 24 * 60)).expect("small") * 60_000_000
                };
                last = offset;
                let kind = *rng.pick(&kinds);
                let url = *rng.pick::<&str>(&urls);
                let mut a = activity(usize::try_from(n).expect("small"), kind, url, T0 + offset);
                if rng.chance(40) {
                    let value = *rng.pick(&["f", "Demo", "ｄｅｍｏ ", "other"]);
                    a.properties.insert("form_id".into(), value.into());
                }
                if rng.chance(20) {
                    a.properties.insert("x".into(), "demo".into());
                }
                if rng.chance(5) {
                    // No occur_time: create_time stands in, or nothing at all.
                    let created = a.occur_time.take();
                    if rng.chance(50) {
                        a.create_time = created;
                    }
                }
                a
            })
            .collect()
    }

    fn sorted(acts: &[Activity]) -> Vec<Activity> {
        let mut timed: Vec<Activity> = acts
            .iter()
            .filter(|a| activity_time(a).is_some())
            .cloned()
            .collect();
        timed.sort_by_key(activity_time);
        timed
    }

    /// Random models and activity sequences fed in chronological order give the engine's
    /// score, grade and qualification at many moments.
    #[test]
    fn matches_the_engine_over_random_models_and_activities() {
        let mut rng = Rng(0x57A7E);
        let leads = [
            Lead::default(),
            Lead {
                industry: "IT".into(),
                country_code: "jp".into(),
                ..Default::default()
            },
            Lead {
                industry: "IT".into(),
                job_title: "Student".into(),
                ..Default::default()
            },
        ];
        let mut compared = 0;
        for round in 0..400 {
            let m = random_model(&mut rng);
            let mut acts = random_activities(&mut rng);
            let lead = &leads[usize::try_from(rng.below(3)).expect("small")];
            // Chronological, ties in random order (the engine breaks them by name).
            rng.shuffle(&mut acts);
            let ordered = sorted(&acts);
            let mut state = ScoreState::new(&m);
            for (i, a) in ordered.iter().enumerate() {
                let time = activity_time(a).expect("timed");
                assert!(state.accepts(time), "round {round}");
                state.apply(&m, a);
                if rng.chance(20) {
                    let as_of =
                        time + i64::try_from(rng.below(3 * MICROS_PER_DAY as u64)).expect("small");
                    let expected = engine::evaluate(&m, lead, &ordered[..=i], as_of);
                    let (score, grade, _) =
                        score_from_state(&m, lead, &state, as_of).expect("at or after anchor");
                    assert!(close(score, expected.score), "round {round} step {i}");
                    assert_eq!(grade, expected.grade, "round {round}");
                }
            }
            // Timeless activities are skipped by both.
            for a in acts.iter().filter(|a| activity_time(a).is_none()) {
                state.apply(&m, a);
            }
            for step in 0..8 {
                let as_of = T0 + 60 * MICROS_PER_DAY + step * 7 * MICROS_PER_DAY;
                let expected = engine::evaluate(&m, lead, &acts, as_of);
                let (score, grade, qualifies) =
                    score_from_state(&m, lead, &state, as_of).expect("after the last activity");
                assert!(
                    close(score, expected.score),
                    "round {round}: {score} vs {}",
                    expected.score
                );
                assert_eq!(grade, expected.grade, "round {round}");
                if (expected.score - m.mql_score_threshold).abs() > 1e-9 {
                    assert_eq!(qualifies, expected.qualifies, "round {round}");
                }
                compared += 1;
            }
            // One by one equals all at once, bit for bit.
            assert_eq!(
                state,
                ScoreState::from_activities(&m, &acts),
                "round {round}"
            );
            let decoded = ScoreState::decode(state.encode_to_vec().as_slice()).expect("decodes");
            assert_eq!(decoded, state);
        }
        assert_eq!(compared, 400 * 8);
    }

    #[test]
    fn same_timestamp_activities_in_any_order() {
        let mut capped = rule("view", ActivityKind::PageView, 4.0);
        capped.max_points_per_day = 10.0;
        capped.max_points = 14.0;
        let m = named(model(
            vec![capped, rule("open", ActivityKind::EmailOpen, 1.5)],
            2.0,
        ));
        let mut acts: Vec<Activity> = (0..6)
            .map(|n| {
                let kind = [ActivityKind::PageView, ActivityKind::EmailOpen][n % 2];
                activity(
                    n,
                    kind,
                    "",
                    T0 + i64::try_from(n / 4).expect("small") * HOUR,
                )
            })
            .collect();
        acts.push(activity(9, ActivityKind::PageView, "", T0 + MICROS_PER_DAY));
        acts.push(activity(8, ActivityKind::PageView, "", T0 + MICROS_PER_DAY));
        let as_of = T0 + 3 * MICROS_PER_DAY;
        let expected = engine::evaluate(&m, &Lead::default(), &acts, as_of).score;
        let forward = applied(&m, &acts);
        let mut reversed_ties = acts.clone();
        reversed_ties.swap(0, 2);
        reversed_ties.swap(6, 7);
        let backward = applied(&m, &reversed_ties);
        assert_eq!(forward, backward);
        assert_eq!(forward, ScoreState::from_activities(&m, &acts));
        let score = forward.engagement(&m, as_of).expect("after");
        assert!(close(score, expected), "{score} vs {expected}");
        // Caps: 10 on day 0 (three views at 4 → 4 + 4 + 2), 4 more on day 1 (total cap 14).
        assert_eq!(forward.rules[0].total_raw, 14.0);
        assert_eq!(forward.rules[0].activities, 5);
        assert_eq!(forward.anchor, T0 + MICROS_PER_DAY);
    }

    #[test]
    fn decay_halves_after_one_half_life() {
        let m = named(model(vec![rule("view", ActivityKind::PageView, 10.0)], 7.0));
        let state = applied(&m, &page_views(&[T0]));
        assert_eq!(state.engagement(&m, T0), Some(10.0));
        assert_eq!(state.engagement(&m, T0 + 7 * MICROS_PER_DAY), Some(5.0));
        assert_eq!(state.engagement(&m, T0 + 14 * MICROS_PER_DAY), Some(2.5));
        // Advancing through a later activity decays the earlier one the same way.
        let state = applied(&m, &page_views(&[T0, T0 + 7 * MICROS_PER_DAY]));
        assert_eq!(state.rules[0].decayed, 15.0);
        assert_eq!(state.engagement(&m, T0 + 14 * MICROS_PER_DAY), Some(7.5));
        // Half-life 0: no decay at all.
        let flat = named(model(vec![rule("view", ActivityKind::PageView, 10.0)], 0.0));
        let state = applied(&flat, &page_views(&[T0, T0 + 1]));
        assert_eq!(
            state.engagement(&flat, T0 + 3650 * MICROS_PER_DAY),
            Some(20.0)
        );
    }

    #[test]
    fn far_apart_activities_do_not_overflow() {
        let m = named(model(
            vec![rule("view", ActivityKind::PageView, 10.0)],
            0.05,
        ));
        let far = T0 + 3000 * MICROS_PER_DAY;
        let state = applied(&m, &page_views(&[0, T0, far]));
        let score = state.engagement(&m, far).expect("after");
        assert_eq!(score, 10.0);
        assert!(state.rules.iter().all(|r| r.decayed.is_finite()));
    }

    #[test]
    fn out_of_order_and_foreign_models_need_a_rebuild() {
        let m = named(model(vec![rule("view", ActivityKind::PageView, 10.0)], 7.0));
        let empty = ScoreState::new(&m);
        assert!(empty.is_for(&m) && empty.accepts(i64::MIN));
        assert_eq!(empty.engagement(&m, T0), Some(0.0));
        let mut state = applied(&m, &page_views(&[T0, T0 + HOUR]));
        assert!(state.accepts(T0 + HOUR) && !state.accepts(T0));
        assert_eq!(state.engagement(&m, T0), None, "before the anchor");
        let newer = ScoringModel {
            revision: 4,
            ..m.clone()
        };
        assert!(!state.is_for(&newer));
        assert_eq!(
            score_from_state(&newer, &Lead::default(), &state, T0 + HOUR),
            None
        );
        // Applying anyway marks the state stale instead of guessing.
        state.apply(&m, &page_views(&[T0])[0]);
        assert!(state.stale && !state.is_for(&m) && !state.accepts(T0 + 2 * HOUR));
        assert_eq!(state.engagement(&m, T0 + 2 * HOUR), None);
        // A hand-raised anchor keeps the sums right.
        let mut raised = applied(&m, &page_views(&[T0]));
        raised.anchor = T0 + 7 * MICROS_PER_DAY;
        assert!(!raised.accepts(T0 + MICROS_PER_DAY));
        assert_eq!(raised.engagement(&m, T0 + 7 * MICROS_PER_DAY), Some(5.0));
        raised.apply(&m, &page_views(&[T0 + 7 * MICROS_PER_DAY])[0]);
        assert_eq!(raised.engagement(&m, T0 + 7 * MICROS_PER_DAY), Some(15.0));
    }

    #[test]
    fn grade_and_qualification_come_from_the_engine() {
        let m = ScoringModel {
            mql_score_threshold: 10.0,
            mql_min_grade: "B".into(),
            fit_rules: vec![
                fit("it", "industry", Operator::Equals, "it", 50.0),
                fit("jp", "country_code", Operator::Equals, "JP", 50.0),
            ],
            ..named(model(vec![rule("view", ActivityKind::PageView, 5.0)], 0.0))
        };
        let lead = Lead {
            industry: "IT".into(),
            ..Default::default()
        };
        let state = applied(&m, &page_views(&[T0, T0 + 1]));
        assert_eq!(
            score_from_state(&m, &lead, &state, T0 + 1),
            Some((10.0, "B".to_owned(), true))
        );
        assert_eq!(
            score_from_state(&m, &Lead::default(), &state, T0 + 1),
            Some((10.0, "D".to_owned(), false))
        );
    }

    #[test]
    fn already_folded_rule_values_are_borrowed_and_equal_the_fold() {
        for text in [
            "/pricing",
            "Docs",
            " b.jp",
            "b.jp\t",
            "ＤＯＣＳ",
            "",
            "  ",
            "é",
            "a\u{0b}",
        ] {
            let key = engine::folded_key(text);
            let expected = text_key(text);
            assert_eq!(
                key.as_deref(),
                (!expected.is_empty()).then_some(expected.as_str())
            );
        }
        assert!(matches!(
            engine::folded_key("/pricing"),
            Some(std::borrow::Cow::Borrowed(_))
        ));
    }
}
