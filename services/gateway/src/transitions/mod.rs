//! Lifecycle transitions: read-only here. The lifecycle reactor records them (a later change);
//! callers get and list them for funnel and time-in-stage analytics.

use kizuna_proto::gateway::{ListTransitionsRequest, Transition};
use kizuna_store::{ListQuery, Page, Store};

use crate::error::Result;
use crate::tables::Transitions;

/// Reads one transition by name.
pub async fn get(store: &Store, name: &str) -> Result<Transition> {
    Ok(store.get::<Transitions>(name).await?)
}

/// Lists the transitions of a subject (`subjects/-` for all), newest first by default.
pub async fn list(store: &Store, request: ListTransitionsRequest) -> Result<Page<Transition>> {
    let query = ListQuery {
        parent: request.parent,
        page_size: request.page_size,
        page_token: request.page_token,
        filter: request.filter,
        order_by: request.order_by,
    };
    Ok(store.list::<Transitions>(&query).await?)
}
