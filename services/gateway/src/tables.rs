//! How gateway resources map onto their tables: indexed columns for filters and ordering.

use kizuna_proto::gateway::{Subject, Transition};
use kizuna_proto::types::LifecycleStage;
use kizuna_store::table::enum_short_name;
use kizuna_store::{Column, Table, Value, standard_meta};

use kizuna_normalize::{email_key, phone_key};

/// The prefix of every `LifecycleStage` value name; filters may write it (`LIFECYCLE_STAGE_MQL`)
/// or leave it out (`MQL`, as stored).
pub const STAGE_PREFIX: &str = "LIFECYCLE_STAGE_";

/// The short stored name of a lifecycle stage, e.g. `MQL` (empty for unknown numbers).
pub fn stage_name(stage: i32) -> String {
    LifecycleStage::try_from(stage)
        .map(|s| enum_short_name(s.as_str_name(), STAGE_PREFIX))
        .unwrap_or_default()
}

/// The stored form of a subject's deals: their names separated by single spaces, so
/// `deals:"deals/42"` finds the subjects linking that deal. (`:` is a substring match here: it
/// also finds `deals/420`; the store has no "repeated field has" operator yet.)
pub fn deals_column(deals: &[String]) -> String {
    deals.join(" ")
}

/// `subjects/{subject}`.
#[derive(Debug)]
pub struct Subjects;

impl Table for Subjects {
    type Message = Subject;
    const KIND: &'static str = "Subject";
    const TABLE: &'static str = "subjects";
    const COLLECTION: &'static str = "subjects";
    const PARENT: Option<&'static str> = None;
    const EVENT_PREFIX: &'static str = "subject";
    const PROTO_NAME: &'static str = "kizuna.gateway.v1.Subject";
    const UNIQUE: &'static [&'static str] = &["lead", "account"];
    const COLUMNS: &'static [Column] = &[
        Column::text("display_name"),
        Column::text("email"),
        Column::text("email_key"),
        Column::text("phone"),
        Column::text("phone_key"),
        Column::text("lead"),
        Column::text("deals"),
        Column::text("account"),
        Column::enumeration("stage").prefixed(STAGE_PREFIX),
    ];

    fn values(subject: &Subject) -> Vec<Value> {
        vec![
            subject.display_name.as_str().into(),
            subject.email.as_str().into(),
            email_key(&subject.email).into(),
            subject.phone.as_str().into(),
            phone_key(&subject.phone).into(),
            subject.lead.as_str().into(),
            deals_column(&subject.deals).into(),
            subject.account.as_str().into(),
            stage_name(subject.stage).into(),
        ]
    }

    standard_meta!();
}

/// `subjects/{subject}/transitions/{transition}`.
#[derive(Debug)]
pub struct Transitions;

impl Table for Transitions {
    type Message = Transition;
    const KIND: &'static str = "Transition";
    const TABLE: &'static str = "transitions";
    const COLLECTION: &'static str = "transitions";
    const PARENT: Option<&'static str> = Some("subjects");
    const EVENT_PREFIX: &'static str = "transition";
    const PROTO_NAME: &'static str = "kizuna.gateway.v1.Transition";
    const DEFAULT_ORDER: &'static str = "transition_time desc";
    const COLUMNS: &'static [Column] = &[
        Column::enumeration("from_stage").prefixed(STAGE_PREFIX),
        Column::enumeration("to_stage").prefixed(STAGE_PREFIX),
        Column::text("cause_service"),
        Column::text("cause_event_type"),
        Column::int("cause_event_sequence"),
        Column::time("transition_time"),
    ];

    fn values(transition: &Transition) -> Vec<Value> {
        let time = transition
            .transition_time
            .as_ref()
            .map(kizuna_store::time::from_timestamp)
            .unwrap_or_default();
        vec![
            stage_name(transition.from_stage).into(),
            stage_name(transition.to_stage).into(),
            transition.cause_service.as_str().into(),
            transition.cause_event_type.as_str().into(),
            transition.cause_event_sequence.into(),
            time.into(),
        ]
    }

    standard_meta!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_and_values_line_up() {
        let subject = Subject {
            email: "Taro@Example.JP".into(),
            phone: "090-1234-5678".into(),
            deals: vec!["deals/1".into(), "deals/42".into()],
            stage: LifecycleStage::Customer as i32,
            ..Subject::default()
        };
        let values = Subjects::values(&subject);
        assert_eq!(values.len(), Subjects::COLUMNS.len());
        let column = |field: &str| {
            let i = Subjects::COLUMNS
                .iter()
                .position(|c| c.field == field)
                .expect("column");
            values[i].clone()
        };
        assert_eq!(column("email_key"), Value::from("taro@example.jp"));
        assert_eq!(column("phone_key"), Value::from("+819012345678"));
        assert_eq!(column("deals"), Value::from("deals/1 deals/42"));
        assert_eq!(column("stage"), Value::from("CUSTOMER"));
        assert_eq!(
            Transitions::values(&Transition::default()).len(),
            Transitions::COLUMNS.len()
        );
    }
}
