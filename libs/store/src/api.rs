//! Pieces of gRPC handlers every service repeats: the [`ListQuery`](crate::ListQuery) of a `List`
//! request ([`list_query!`](crate::list_query)) and the `WatchEvents` stream.

use std::pin::Pin;

use futures::{Stream, StreamExt};
use kizuna_errors::ApiError;
use kizuna_proto::kizuna::events::v1::Event;
use tonic::Status;

use crate::Store;

/// The stream a `WatchEvents` handler returns, with `R` its response message.
pub type EventStream<R> = Pin<Box<dyn Stream<Item = Result<R, Status>> + Send + 'static>>;

/// The body of a `WatchEvents` handler: the store's events after `after_sequence` (of `types`,
/// or all when empty), each wrapped by `wrap` into the service's response message, errors
/// mapped to statuses in `domain`. A negative `after_sequence` is INVALID_ARGUMENT.
pub fn watch_events<R: Send + 'static>(
    store: &Store,
    after_sequence: i64,
    types: Vec<String>,
    domain: &'static str,
    wrap: fn(Event) -> R,
) -> Result<EventStream<R>, Status> {
    if after_sequence < 0 {
        return Err(ApiError::invalid("after_sequence", "must not be negative").into_status(domain));
    }
    let stream = store
        .watch(after_sequence, types)
        .map(move |item| item.map(wrap).map_err(|e| e.into_status(domain)));
    Ok(Box::pin(stream))
}

/// The [`ListQuery`](crate::ListQuery) of a standard `List` request (the AIP-132 fields
/// `page_size`, `page_token`, `filter` and `order_by`): `list_query!(request)` for a top-level
/// collection, `list_query!(request, parent)` to take `request.parent` too. Moves the fields out
/// of `request`.
#[macro_export]
macro_rules! list_query {
    ($request:expr) => {{
        let request = $request;
        $crate::ListQuery {
            parent: ::std::string::String::new(),
            page_size: request.page_size,
            page_token: request.page_token,
            filter: request.filter,
            order_by: request.order_by,
        }
    }};
    ($request:expr, parent) => {{
        let request = $request;
        $crate::ListQuery {
            parent: request.parent,
            page_size: request.page_size,
            page_token: request.page_token,
            filter: request.filter,
            order_by: request.order_by,
        }
    }};
}

#[cfg(test)]
mod tests {
    #[derive(Clone)]
    struct ListThingsRequest {
        parent: String,
        page_size: i32,
        page_token: String,
        filter: String,
        order_by: String,
    }

    #[test]
    fn list_queries_take_the_standard_fields() {
        let request = ListThingsRequest {
            parent: "accounts/a".into(),
            page_size: 7,
            page_token: "t".into(),
            filter: "f = 1".into(),
            order_by: "create_time".into(),
        };
        let top = list_query!(request.clone());
        assert_eq!(top.parent, "");
        assert_eq!((top.page_size, top.page_token.as_str()), (7, "t"));
        assert_eq!(
            (top.filter.as_str(), top.order_by.as_str()),
            ("f = 1", "create_time")
        );
        let child = list_query!(request, parent);
        assert_eq!(child.parent, "accounts/a");
        assert_eq!((child.page_size, child.filter.as_str()), (7, "f = 1"));
    }
}
