//! Test fixtures shared by the unit tests of the deals folder: a deal that can be started, the
//! fields an INVALID_ARGUMENT names, and yen amounts (from the crate's test support).

use kizuna_errors::ApiError;
use kizuna_proto::deals::Deal;

pub(super) use crate::testing::yen;

pub(super) fn deal() -> Deal {
    Deal {
        display_name: "Clinic chain, 40 seats".into(),
        amount: Some(yen(1_200_000)),
        ..Deal::default()
    }
}

pub(super) fn fields(result: Result<(), ApiError>) -> Vec<String> {
    match result {
        Err(ApiError::InvalidArgument(v)) => v.into_iter().map(|v| v.field).collect(),
        other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
    }
}
