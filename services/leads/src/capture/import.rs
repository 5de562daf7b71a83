//! `ImportLeads`: a client stream of rows, each captured on its own as by `CaptureLead`.
//!
//! A bad row fails alone (`FAILED` with its [`RowError`](kizuna_proto::leads::RowError)); the
//! others still land, each committed by its own transaction as it is read. A broken request
//! stream aborts the call with the stream's status: the rows captured until then stay, and a
//! retry with the same row request ids answers them from the idempotency ledger.
//!
//! At most [`MAX_IMPORT_ROWS`] rows per stream: the row after the limit aborts the call with
//! INVALID_ARGUMENT (field `request`), rather than answering a response with an unbounded list
//! of failed rows. As above, the rows before it stay captured; split the import and resend.

use futures::{Stream, StreamExt};
use kizuna_errors::ApiError;
use kizuna_proto::leads::{
    CaptureOutcome, ImportLeadResult, ImportLeadsRequest, ImportLeadsResponse,
};
use kizuna_store::Store;

use super::capture;
use crate::error::{Error, Result, row_error};

/// Most rows one `ImportLeads` stream may carry.
pub const MAX_IMPORT_ROWS: i64 = 100_000;
/// `source` of an imported lead that names none.
pub const IMPORT_SOURCE: &str = "import";

/// Captures every row of an import stream on its own; one result per row, in order.
pub async fn import(
    store: &Store,
    mut rows: impl Stream<Item = Result<ImportLeadsRequest, tonic::Status>> + Send + Unpin,
) -> Result<ImportLeadsResponse> {
    let mut response = ImportLeadsResponse::default();
    let mut index: i64 = 0;
    while let Some(row) = rows.next().await {
        let row = row.map_err(Error::Stream)?;
        if index >= MAX_IMPORT_ROWS {
            return Err(ApiError::invalid(
                "request",
                format!(
                    "at most {MAX_IMPORT_ROWS} rows per ImportLeads stream; the first \
                     {MAX_IMPORT_ROWS} rows were captured, send the rest in another stream"
                ),
            )
            .into());
        }
        let result = match row.lead {
            None => Err(ApiError::invalid("lead", "is required").into()),
            Some(mut lead) => {
                if lead.source.trim().is_empty() {
                    lead.source = IMPORT_SOURCE.into();
                }
                capture(store, lead, &row.request_id).await
            }
        };
        let result = match result {
            Ok(captured) => {
                match CaptureOutcome::try_from(captured.outcome) {
                    Ok(CaptureOutcome::Merged) => response.merged_count += 1,
                    _ => response.created_count += 1,
                }
                ImportLeadResult {
                    row: index,
                    outcome: captured.outcome,
                    lead: captured.lead.map(|lead| lead.name).unwrap_or_default(),
                    matched_on: captured.matched_on,
                    error: None,
                }
            }
            Err(Error::Stream(status)) => return Err(Error::Stream(status)),
            Err(error) => {
                response.failed_count += 1;
                ImportLeadResult {
                    row: index,
                    outcome: CaptureOutcome::Failed as i32,
                    error: Some(row_error(index, error)),
                    ..Default::default()
                }
            }
        };
        response.results.push(result);
        index += 1;
    }
    Ok(response)
}
