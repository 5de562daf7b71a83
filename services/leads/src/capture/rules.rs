//! The merge rules shared by `CaptureLead` (a captured lead merged into the lead it matches) and
//! `MergeLeads` (one stored lead merged into another): one pure function, [`merge_fields`].
//!
//! - Scalar fields the survivor leaves empty (`email`, `phone`, the names and their readings,
//!   `company`, `job_title`, `industry`, `company_size` where 0 means unknown, `country_code`,
//!   `region`, `source`, `campaign`, `landing_page`, `owner`) are filled from the other lead; a
//!   value the survivor has is never overwritten. For `source`, `campaign`, `utm` and
//!   `landing_page` this is first-touch attribution: the survivor keeps how it came in.
//! - `utm` is taken whole from the other lead when the survivor has none (or only empty values).
//! - `tags`: union, the survivor's first in their order, then the other's new ones, at most
//!   [`MAX_TAGS`].
//! - `custom_fields`: the survivor's entries are kept; keys it lacks are added from the other
//!   lead (in key order) up to [`MAX_CUSTOM_FIELDS`] entries.
//! - `consents`, per channel: the strictest state wins — DENIED (opted out) beats GRANTED (opted
//!   in) beats UNKNOWN or UNSPECIFIED. An opt-out recorded on either record is therefore never
//!   lost by a merge, even when the other record holds a later opt-in; an explicit new opt-in is
//!   recorded by updating the lead, not by capturing it again. With the same state on both, the
//!   record with the newer `update_time` is kept (with its `source`); on a tie (or both without
//!   time) the survivor's. Channels only the other lead has are appended.
//!
//! Output-only fields (name, stage, score, grade, etag, times, merged_leads) are not touched:
//! the callers decide those. Given two leads that each pass `validate`, the result passes it
//! too (every field comes whole from one side and the list limits are enforced here).

use kizuna_proto::leads::Lead;
use kizuna_proto::types::{Consent, ConsentState};

/// Most tags a lead may have.
pub const MAX_TAGS: usize = 50;
/// Most custom fields a lead may have.
pub const MAX_CUSTOM_FIELDS: usize = 50;

/// Fills `field` from `other` when it is blank; true when it changed.
fn fill(field: &mut String, other: &str) -> bool {
    if field.trim().is_empty() && !other.trim().is_empty() && field != other {
        *field = other.to_owned();
        return true;
    }
    false
}

/// How strict a consent state is: the higher, the more it restricts sending.
fn strictness(state: i32) -> u8 {
    match ConsentState::try_from(state) {
        Ok(ConsentState::Denied) => 2,
        Ok(ConsentState::Granted) => 1,
        _ => 0,
    }
}

/// `update_time` of a consent as a comparable pair; none sorts first.
fn recorded_at(consent: &Consent) -> Option<(i64, i32)> {
    consent.update_time.as_ref().map(|t| (t.seconds, t.nanos))
}

/// Whether `candidate` should replace `current` for the same channel.
fn consent_wins(candidate: &Consent, current: &Consent) -> bool {
    let (new, old) = (strictness(candidate.state), strictness(current.state));
    if new != old {
        return new > old;
    }
    recorded_at(candidate) > recorded_at(current)
}

/// Merges the caller-settable fields of `other` into `survivor` by the rules of this module.
/// Returns the paths of the fields of `survivor` that changed, in field order (e.g. `company`,
/// `utm`, `consents`, `tags`).
pub fn merge_fields(survivor: &mut Lead, other: &Lead) -> Vec<&'static str> {
    let mut changed = Vec::new();
    macro_rules! fill_all {
        ($($field:ident),* $(,)?) => {
            $(
                if fill(&mut survivor.$field, &other.$field) {
                    changed.push(stringify!($field));
                }
            )*
        };
    }
    fill_all!(
        email,
        phone,
        given_name,
        family_name,
        given_name_reading,
        family_name_reading,
        company,
        job_title,
        industry,
    );
    if survivor.company_size <= 0 && other.company_size > 0 {
        survivor.company_size = other.company_size;
        changed.push("company_size");
    }
    fill_all!(country_code, region, source, campaign);
    let survivor_has_utm = survivor
        .utm
        .as_ref()
        .is_some_and(|u| u != &Default::default());
    let other_has_utm = other.utm.as_ref().is_some_and(|u| u != &Default::default());
    if !survivor_has_utm && other_has_utm {
        survivor.utm = other.utm.clone();
        changed.push("utm");
    }
    fill_all!(landing_page);

    let mut consents_changed = false;
    for consent in &other.consents {
        match survivor
            .consents
            .iter_mut()
            .find(|c| c.channel == consent.channel)
        {
            Some(current) => {
                if consent_wins(consent, current) && current != consent {
                    *current = consent.clone();
                    consents_changed = true;
                }
            }
            None => {
                survivor.consents.push(consent.clone());
                consents_changed = true;
            }
        }
    }
    if consents_changed {
        changed.push("consents");
    }

    let mut tags_changed = false;
    for tag in &other.tags {
        if survivor.tags.len() >= MAX_TAGS {
            break;
        }
        if !survivor.tags.contains(tag) {
            survivor.tags.push(tag.clone());
            tags_changed = true;
        }
    }
    if tags_changed {
        changed.push("tags");
    }

    let mut keys: Vec<&String> = other
        .custom_fields
        .keys()
        .filter(|key| !survivor.custom_fields.contains_key(*key))
        .collect();
    keys.sort();
    let mut fields_changed = false;
    for key in keys {
        if survivor.custom_fields.len() >= MAX_CUSTOM_FIELDS {
            break;
        }
        if let Some(value) = other.custom_fields.get(key) {
            survivor.custom_fields.insert(key.clone(), value.clone());
            fields_changed = true;
        }
    }
    if fields_changed {
        changed.push("custom_fields");
    }

    if fill(&mut survivor.owner, &other.owner) {
        changed.push("owner");
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use kizuna_proto::leads::lead::Utm;
    use kizuna_proto::types::Channel;
    use prost_types::Timestamp;

    fn consent(channel: Channel, state: ConsentState, secs: Option<i64>, source: &str) -> Consent {
        Consent {
            channel: channel as i32,
            state: state as i32,
            update_time: secs.map(|seconds| Timestamp { seconds, nanos: 0 }),
            source: source.into(),
        }
    }

    #[test]
    fn empty_fields_are_filled_and_set_ones_kept() {
        let mut survivor = Lead {
            email: "taro@example.jp".into(),
            company: "絆商事".into(),
            source: "form".into(),
            ..Default::default()
        };
        let other = Lead {
            email: "other@example.jp".into(),
            phone: "090-1234-5678".into(),
            given_name: "太郎".into(),
            company: "Other KK".into(),
            company_size: 120,
            country_code: "JP".into(),
            source: "import".into(),
            campaign: "spring".into(),
            landing_page: "https://example.jp/lp".into(),
            owner: "users/1".into(),
            ..Default::default()
        };
        let changed = merge_fields(&mut survivor, &other);
        assert_eq!(
            changed,
            vec![
                "phone",
                "given_name",
                "company_size",
                "country_code",
                "campaign",
                "landing_page",
                "owner"
            ]
        );
        assert_eq!(survivor.email, "taro@example.jp");
        assert_eq!(survivor.company, "絆商事");
        assert_eq!(survivor.source, "form", "first touch attribution");
        assert_eq!(survivor.phone, "090-1234-5678");
        assert_eq!(survivor.company_size, 120);
        assert!(crate::capture::validate(&survivor, "lead").is_ok());
    }

    #[test]
    fn nothing_to_merge_changes_nothing() {
        let mut survivor = Lead {
            email: "taro@example.jp".into(),
            tags: vec!["vip".into()],
            ..Default::default()
        };
        let before = survivor.clone();
        let changed = merge_fields(&mut survivor, &before.clone());
        assert!(changed.is_empty(), "{changed:?}");
        assert_eq!(survivor, before);
    }

    #[test]
    fn utm_is_taken_whole_only_when_missing() {
        let utm = |source: &str| {
            Some(Utm {
                source: source.into(),
                medium: "cpc".into(),
                ..Default::default()
            })
        };
        let mut survivor = Lead {
            utm: Some(Utm::default()),
            ..Default::default()
        };
        let other = Lead {
            utm: utm("google"),
            ..Default::default()
        };
        assert_eq!(merge_fields(&mut survivor, &other), vec!["utm"]);
        assert_eq!(survivor.utm, utm("google"));
        let other = Lead {
            utm: utm("yahoo"),
            ..Default::default()
        };
        assert!(merge_fields(&mut survivor, &other).is_empty());
        assert_eq!(survivor.utm, utm("google"));
    }

    #[test]
    fn tags_union_in_order_and_capped() {
        let mut survivor = Lead {
            tags: vec!["b".into(), "a".into()],
            ..Default::default()
        };
        let other = Lead {
            tags: vec!["a".into(), "c".into(), "b".into(), "d".into()],
            ..Default::default()
        };
        assert_eq!(merge_fields(&mut survivor, &other), vec!["tags"]);
        assert_eq!(survivor.tags, vec!["b", "a", "c", "d"]);

        let mut full = Lead {
            tags: (0..49).map(|i| format!("t{i}")).collect(),
            ..Default::default()
        };
        let other = Lead {
            tags: vec!["x".into(), "y".into(), "z".into()],
            ..Default::default()
        };
        merge_fields(&mut full, &other);
        assert_eq!(full.tags.len(), MAX_TAGS);
        assert_eq!(full.tags.last().map(String::as_str), Some("x"));
    }

    #[test]
    fn custom_fields_keep_survivor_values_and_cap() {
        let mut survivor = Lead::default();
        survivor.custom_fields.insert("plan".into(), "pro".into());
        let mut other = Lead::default();
        other.custom_fields.insert("plan".into(), "free".into());
        other.custom_fields.insert("seats".into(), "10".into());
        assert_eq!(merge_fields(&mut survivor, &other), vec!["custom_fields"]);
        assert_eq!(survivor.custom_fields["plan"], "pro");
        assert_eq!(survivor.custom_fields["seats"], "10");

        let mut full = Lead::default();
        for i in 0..48 {
            full.custom_fields.insert(format!("k{i:02}"), "v".into());
        }
        let mut other = Lead::default();
        for key in ["z1", "z2", "z3", "z4"] {
            other.custom_fields.insert(key.into(), "v".into());
        }
        merge_fields(&mut full, &other);
        assert_eq!(full.custom_fields.len(), MAX_CUSTOM_FIELDS);
        assert!(full.custom_fields.contains_key("z1") && full.custom_fields.contains_key("z2"));
        assert!(!full.custom_fields.contains_key("z3"));
    }

    #[test]
    fn strictest_consent_wins_then_newest() {
        use Channel::*;
        use ConsentState::*;
        let mut survivor = Lead {
            email: "taro@example.jp".into(),
            consents: vec![
                consent(Email, Granted, Some(300), "form"),
                consent(Sms, Denied, Some(100), "unsubscribe-link"),
                consent(Line, Unknown, None, "import"),
                consent(Post, Granted, Some(100), "form:old"),
            ],
            ..Default::default()
        };
        let other = Lead {
            consents: vec![
                // Opt-out beats an opt-in, even an older one.
                consent(Email, Denied, Some(100), "call"),
                // An opt-in never beats an opt-out, even a newer one.
                consent(Sms, Granted, Some(900), "form"),
                // An opt-in beats no answer.
                consent(Line, Granted, Some(50), "form:line"),
                // Same state: the newer record is kept.
                consent(Post, Granted, Some(200), "form:new"),
                // A channel only the other lead has is added.
                consent(Phone, Denied, None, "call"),
            ],
            ..Default::default()
        };
        assert_eq!(merge_fields(&mut survivor, &other), vec!["consents"]);
        assert_eq!(
            survivor.consents,
            vec![
                consent(Email, Denied, Some(100), "call"),
                consent(Sms, Denied, Some(100), "unsubscribe-link"),
                consent(Line, Granted, Some(50), "form:line"),
                consent(Post, Granted, Some(200), "form:new"),
                consent(Phone, Denied, None, "call"),
            ]
        );
        assert!(crate::capture::validate(&survivor, "lead").is_ok());

        // Same state, older or equal record: the survivor's stays.
        let before = survivor.clone();
        let other = Lead {
            consents: vec![
                consent(Post, Granted, Some(200), "form:same-time"),
                consent(Line, Granted, None, "form:untimed"),
            ],
            ..Default::default()
        };
        assert!(merge_fields(&mut survivor, &other).is_empty());
        assert_eq!(survivor, before);
    }
}
