//! Lifecycle transitions: read-only here. The lifecycle reactor records them (a later change);
//! callers get and list them for funnel and time-in-stage analytics.

use kizuna_proto::gateway::{ListTransitionsRequest, Transition};
use kizuna_store::{Page, Store, list_query};

use crate::error::Result;
use crate::tables::Transitions;

/// Reads one transition by name.
pub async fn get(store: &Store, name: &str) -> Result<Transition> {
    Ok(store.get::<Transitions>(name).await?)
}

/// Lists the transitions of a subject (`subjects/-` for all), newest first by default.
pub async fn list(store: &Store, request: ListTransitionsRequest) -> Result<Page<Transition>> {
    let query = list_query!(request, parent);
    Ok(store.list::<Transitions>(&query).await?)
}
