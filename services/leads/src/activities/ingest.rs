//! Bulk ingest of activities (`TrackActivities`): server-side batches, one transaction each,
//! scoring incrementally.

use futures::{Stream, StreamExt};
use kizuna_errors::ApiError;
use kizuna_proto::leads::{TrackActivitiesRequest, TrackActivitiesResponse};
use kizuna_store::Store;

use crate::error::{Error, Result};

/// Records every activity of the stream; see `TrackActivities`.
pub async fn track_many(
    store: &Store,
    mut batches: impl Stream<Item = Result<TrackActivitiesRequest, tonic::Status>> + Send + Unpin,
) -> Result<TrackActivitiesResponse> {
    let _ = store;
    while let Some(batch) = batches.next().await {
        batch.map_err(Error::Stream)?;
    }
    Err(ApiError::FailedPrecondition {
        reason: "NOT_IMPLEMENTED",
        message: "TrackActivities is not implemented yet".into(),
    }
    .into())
}
