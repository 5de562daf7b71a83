//! Test fixtures shared by the unit tests of the deals folder: a yen amount, an open-able deal
//! and the fields an INVALID_ARGUMENT names.

use kizuna_errors::ApiError;
use kizuna_proto::deals::Deal;
use kizuna_proto::types::Money;

pub(super) fn yen(amount_minor: i64) -> Money {
    Money {
        currency_code: "JPY".into(),
        amount_minor,
    }
}

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
