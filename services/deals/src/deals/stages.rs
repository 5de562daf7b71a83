//! Stage movement: where a new deal starts, and what an update's new stage or state does to it.
//!
//! A deal's state follows its stage: moving it to the pipeline's CLOSED_WON stage wins it, to the
//! CLOSED_LOST stage loses it (a reason is required), to an open stage (re)opens it. Setting the
//! state instead moves the deal to the matching closed stage when the pipeline has one. The win
//! probability is the stage's default (1 when won, 0 when lost).

use kizuna_errors::ApiError;
use kizuna_proto::deals::{Deal, Pipeline, deal};
use kizuna_proto::prost_types::Timestamp;
use kizuna_store::WriteTx;

use crate::error::Result;
use crate::pipelines::{closing_stage, find_stage, stage_ids, stage_state};
use crate::tables::Deals;

fn not_a_stage(pipeline: &Pipeline, stage: &str) -> ApiError {
    ApiError::invalid(
        "deal.stage",
        format!(
            "`{stage}` is not a stage of {} (stages: {})",
            pipeline.name,
            stage_ids(pipeline)
        ),
    )
}

/// Places a new deal in `pipeline`: its first stage unless one is named, which must be open;
/// the deal is open with the stage's probability.
pub fn start(deal: &mut Deal, pipeline: &Pipeline) -> Result<(), ApiError> {
    let requested = deal.state;
    if requested != deal::State::Unspecified as i32 && requested != deal::State::Open as i32 {
        return Err(ApiError::invalid(
            "deal.state",
            "new deals are STATE_OPEN; close a deal by updating its stage or state",
        ));
    }
    deal.pipeline = pipeline.name.clone();
    if deal.stage.is_empty()
        && let Some(first) = pipeline.stages.first()
    {
        deal.stage = first.stage_id.clone();
    }
    let stage =
        find_stage(pipeline, &deal.stage).ok_or_else(|| not_a_stage(pipeline, &deal.stage))?;
    if stage_state(stage) != deal::State::Open {
        return Err(ApiError::invalid(
            "deal.stage",
            format!(
                "new deals start in an open stage; `{}` is a closed stage (close the deal by updating it)",
                stage.stage_id
            ),
        ));
    }
    deal.state = deal::State::Open as i32;
    deal.probability = stage.probability;
    deal.close_time = None;
    Ok(())
}

/// What an update did to a deal's place in its pipeline.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Movement {
    /// The pipeline or stage changed.
    pub stage_changed: bool,
    /// The deal became won.
    pub won: bool,
    /// The deal became lost.
    pub lost: bool,
    /// A closed deal became open again.
    pub reopened: bool,
}

impl Movement {
    /// Whether anything moved.
    pub fn any(&self) -> bool {
        self.stage_changed || self.won || self.lost || self.reopened
    }
}

fn state_of(value: i32) -> deal::State {
    deal::State::try_from(value).unwrap_or(deal::State::Unspecified)
}

/// Reconciles stage and state after an update of `old` into `deal`, in `pipeline` (`None` when
/// the deal's pipeline no longer exists, which is fine as long as nothing moves), and sets the
/// probability and close time. `now` is the close time when the caller gives none.
pub fn settle(
    old: &Deal,
    deal: &mut Deal,
    pipeline: Option<&Pipeline>,
    now: Timestamp,
) -> Result<Movement, ApiError> {
    let old_state = match state_of(old.state) {
        deal::State::Unspecified => deal::State::Open,
        state => state,
    };
    let requested = state_of(deal.state);
    let moved = deal.pipeline != old.pipeline || deal.stage != old.stage;
    let touched = requested != deal::State::Unspecified && requested != old_state;
    if !moved && !touched {
        deal.state = old_state as i32;
        keep_close_fields(old, deal, old_state);
        if old_state == deal::State::Open
            && let Some(stage) = pipeline.and_then(|p| find_stage(p, &deal.stage))
        {
            deal.probability = stage.probability;
        }
        return Ok(Movement::default());
    }
    let Some(pipeline) = pipeline else {
        return Err(ApiError::invalid(
            "deal.pipeline",
            format!("`{}` does not exist", deal.pipeline),
        ));
    };
    let stage =
        find_stage(pipeline, &deal.stage).ok_or_else(|| not_a_stage(pipeline, &deal.stage))?;
    let new_state = if moved {
        let stage_state = stage_state(stage);
        if touched && requested != stage_state {
            return Err(ApiError::invalid(
                "deal.state",
                format!(
                    "{} contradicts stage `{}`, where deals are {}; set the stage or the state, not both",
                    requested.as_str_name(),
                    stage.stage_id,
                    stage_state.as_str_name()
                ),
            ));
        }
        stage_state
    } else if touched {
        match requested {
            deal::State::Won | deal::State::Lost => {
                if let Some(closing) = closing_stage(pipeline, requested) {
                    deal.stage = closing.stage_id.clone();
                }
                requested
            }
            _ => {
                if stage_state(stage) != deal::State::Open {
                    return Err(ApiError::invalid(
                        "deal.stage",
                        format!(
                            "reopening a deal needs an open stage; `{}` is closed (open stages: {})",
                            stage.stage_id,
                            open_stage_ids(pipeline)
                        ),
                    ));
                }
                deal::State::Open
            }
        }
    } else {
        old_state
    };
    deal.state = new_state as i32;
    match new_state {
        deal::State::Won | deal::State::Lost => {
            if new_state != old_state {
                if deal.close_time.is_none() || deal.close_time == old.close_time {
                    deal.close_time = Some(now);
                }
            } else if deal.close_time.is_none() {
                deal.close_time = old.close_time;
            }
            deal.probability = if new_state == deal::State::Won {
                1.0
            } else {
                0.0
            };
            if new_state == deal::State::Lost && deal.close_reason.trim().is_empty() {
                return Err(ApiError::invalid(
                    "deal.close_reason",
                    "is required when the deal is lost",
                ));
            }
        }
        _ => {
            deal.close_time = None;
            if old_state != deal::State::Open {
                deal.close_reason.clear();
            }
            let stage = find_stage(pipeline, &deal.stage)
                .ok_or_else(|| not_a_stage(pipeline, &deal.stage))?;
            deal.probability = stage.probability;
        }
    }
    Ok(Movement {
        stage_changed: deal.pipeline != old.pipeline || deal.stage != old.stage,
        won: new_state == deal::State::Won && old_state != deal::State::Won,
        lost: new_state == deal::State::Lost && old_state != deal::State::Lost,
        reopened: new_state == deal::State::Open && old_state != deal::State::Open,
    })
}

fn keep_close_fields(old: &Deal, deal: &mut Deal, state: deal::State) {
    if state == deal::State::Open {
        deal.close_time = None;
    } else if deal.close_time.is_none() {
        deal.close_time = old.close_time;
    }
    deal.probability = old.probability;
}

fn open_stage_ids(pipeline: &Pipeline) -> String {
    pipeline
        .stages
        .iter()
        .filter(|s| stage_state(s) == deal::State::Open)
        .map(|s| s.stage_id.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Announces `movement` of the updated deal: `deal.stage_changed`, then `deal.won`,
/// `deal.lost` or `deal.reopened` when the state changed, in the transaction of the change.
pub(super) async fn announce(
    tx: &mut WriteTx<'_>,
    movement: Movement,
    updated: &Deal,
) -> Result<()> {
    if movement.stage_changed {
        tx.emit::<Deals>("stage_changed", updated).await?;
    }
    if movement.won {
        tx.emit::<Deals>("won", updated).await?;
    }
    if movement.lost {
        tx.emit::<Deals>("lost", updated).await?;
    }
    if movement.reopened {
        tx.emit::<Deals>("reopened", updated).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deals::fixtures::{deal, fields};
    use crate::testing::sales_pipeline;

    fn pipeline() -> Pipeline {
        Pipeline {
            name: "pipelines/new-business".into(),
            ..sales_pipeline(false)
        }
    }

    fn open_deal() -> Deal {
        let mut d = deal();
        start(&mut d, &pipeline()).expect("starts");
        d.name = "deals/d1".into();
        d
    }

    fn now() -> Timestamp {
        Timestamp {
            seconds: 1_800_000_000,
            nanos: 0,
        }
    }

    #[test]
    fn new_deals_start_open_in_the_first_stage() {
        let mut d = deal();
        d.probability = 0.99;
        start(&mut d, &pipeline()).expect("starts");
        assert_eq!(d.pipeline, "pipelines/new-business");
        assert_eq!(d.stage, "qualification");
        assert_eq!(d.state, deal::State::Open as i32);
        assert_eq!(d.probability, 0.1);

        let mut d = deal();
        d.stage = "proposal".into();
        start(&mut d, &pipeline()).expect("starts");
        assert_eq!(d.probability, 0.5);

        let mut d = deal();
        d.stage = "closed_won".into();
        assert_eq!(fields(start(&mut d, &pipeline())), ["deal.stage"]);
        let mut d = deal();
        d.stage = "nope".into();
        assert_eq!(fields(start(&mut d, &pipeline())), ["deal.stage"]);
        let mut d = deal();
        d.state = deal::State::Won as i32;
        assert_eq!(fields(start(&mut d, &pipeline())), ["deal.state"]);
    }

    #[test]
    fn moving_to_the_closed_won_stage_wins() {
        let old = open_deal();
        let mut d = old.clone();
        d.stage = "closed_won".into();
        let m = settle(&old, &mut d, Some(&pipeline()), now()).expect("wins");
        assert_eq!(
            m,
            Movement {
                stage_changed: true,
                won: true,
                ..Movement::default()
            }
        );
        assert_eq!(d.state, deal::State::Won as i32);
        assert_eq!(d.probability, 1.0);
        assert_eq!(d.close_time, Some(now()));
    }

    #[test]
    fn moving_to_the_closed_lost_stage_needs_a_reason() {
        let old = open_deal();
        let mut d = old.clone();
        d.stage = "closed_lost".into();
        assert_eq!(
            fields(settle(&old, &mut d, Some(&pipeline()), now()).map(|_| ())),
            ["deal.close_reason"]
        );
        let mut d = old.clone();
        d.stage = "closed_lost".into();
        d.close_reason = "budget cut".into();
        let m = settle(&old, &mut d, Some(&pipeline()), now()).expect("loses");
        assert!(m.lost && m.stage_changed && !m.won);
        assert_eq!(d.state, deal::State::Lost as i32);
        assert_eq!(d.probability, 0.0);
    }

    #[test]
    fn setting_the_state_moves_to_the_closing_stage() {
        let old = open_deal();
        let mut d = old.clone();
        d.state = deal::State::Won as i32;
        let given = Timestamp {
            seconds: 1_700_000_000,
            nanos: 0,
        };
        d.close_time = Some(given);
        let m = settle(&old, &mut d, Some(&pipeline()), now()).expect("wins");
        assert!(m.won && m.stage_changed);
        assert_eq!(d.stage, "closed_won");
        assert_eq!(d.close_time, Some(given), "a given close time is kept");

        let mut without_closing_stages = pipeline();
        without_closing_stages.stages.truncate(2);
        let mut d = old.clone();
        d.state = deal::State::Won as i32;
        let m = settle(&old, &mut d, Some(&without_closing_stages), now()).expect("wins");
        assert!(m.won && !m.stage_changed);
        assert_eq!(d.stage, "qualification");
        assert_eq!(d.probability, 1.0);
    }

    #[test]
    fn a_state_contradicting_the_new_stage_is_refused() {
        let old = open_deal();
        let mut d = old.clone();
        d.stage = "proposal".into();
        d.state = deal::State::Won as i32;
        assert_eq!(
            fields(settle(&old, &mut d, Some(&pipeline()), now()).map(|_| ())),
            ["deal.state"]
        );
    }

    #[test]
    fn moving_a_closed_deal_to_an_open_stage_reopens_it() {
        let open = open_deal();
        let mut lost = open.clone();
        lost.stage = "closed_lost".into();
        lost.close_reason = "no budget".into();
        settle(&open, &mut lost, Some(&pipeline()), now()).expect("loses");

        let mut d = lost.clone();
        d.state = deal::State::Open as i32;
        assert_eq!(
            fields(settle(&lost, &mut d, Some(&pipeline()), now()).map(|_| ())),
            ["deal.stage"],
            "reopening in place would leave the deal in a closed stage"
        );

        let mut d = lost.clone();
        d.stage = "proposal".into();
        let m = settle(&lost, &mut d, Some(&pipeline()), now()).expect("reopens");
        assert!(m.reopened && m.stage_changed);
        assert_eq!(d.state, deal::State::Open as i32);
        assert_eq!(d.close_time, None);
        assert!(d.close_reason.is_empty());
        assert_eq!(d.probability, 0.5);
    }

    #[test]
    fn unrelated_changes_do_not_move_the_deal() {
        let old = open_deal();
        let mut d = old.clone();
        d.owner = "users/hanako".into();
        d.close_time = Some(now());
        let m = settle(&old, &mut d, None, now()).expect("no pipeline needed");
        assert!(!m.any());
        assert_eq!(d.close_time, None, "open deals have no close time");
        let mut d = old.clone();
        d.stage = "proposal".into();
        assert_eq!(
            fields(settle(&old, &mut d, None, now()).map(|_| ())),
            ["deal.pipeline"]
        );
    }

    #[test]
    fn stage_moves_are_checked_against_the_pipeline() {
        let old = open_deal();
        let mut d = old.clone();
        d.stage = "signed".into();
        assert_eq!(
            fields(settle(&old, &mut d, Some(&pipeline()), now()).map(|_| ())),
            ["deal.stage"]
        );
    }
}
