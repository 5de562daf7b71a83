//! gRPC handlers: unpack the request, call the domain, map the error. Nothing else lives here.

use kizuna_errors::required;
use kizuna_proto::gateway::gateway_service_server::GatewayService;
use kizuna_proto::gateway::*;
use kizuna_store::Store;
use tonic::{Request, Response, Status};

use crate::error::Error;
use crate::upstream::{CallContext, Upstreams};
use crate::{subjects, transitions};

/// The `kizuna.gateway.v1.GatewayService` implementation.
#[derive(Clone, Debug)]
pub struct GatewayApi {
    store: Store,
    upstreams: Upstreams,
}

impl GatewayApi {
    /// Handlers over `store`, reading Customer 360 parts through `upstreams`.
    pub fn new(store: Store, upstreams: Upstreams) -> Self {
        Self { store, upstreams }
    }
}

fn status(error: impl Into<Error>) -> Status {
    error.into().into()
}

type Reply<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl GatewayService for GatewayApi {
    #[tracing::instrument(skip_all, fields(name = %request.get_ref().name, view = request.get_ref().view))]
    async fn get_subject(&self, request: Request<GetSubjectRequest>) -> Reply<Subject> {
        let call = CallContext::from_metadata(request.metadata());
        let r = request.into_inner();
        let subject = subjects::get(&self.store, &self.upstreams, &call, &r.name, r.view)
            .await
            .map_err(status)?;
        Ok(Response::new(subject))
    }

    #[tracing::instrument(skip_all)]
    async fn list_subjects(
        &self,
        request: Request<ListSubjectsRequest>,
    ) -> Reply<ListSubjectsResponse> {
        let page = subjects::list(&self.store, request.into_inner())
            .await
            .map_err(status)?;
        Ok(Response::new(ListSubjectsResponse {
            subjects: page.items,
            next_page_token: page.next_page_token,
        }))
    }

    #[tracing::instrument(skip_all, fields(request_id = %request.get_ref().request_id))]
    async fn create_subject(&self, request: Request<CreateSubjectRequest>) -> Reply<Subject> {
        let r = request.into_inner();
        let subject = required(r.subject, "subject").map_err(status)?;
        let created = subjects::create(&self.store, subject, &r.subject_id, &r.request_id)
            .await
            .map_err(status)?;
        Ok(Response::new(created))
    }

    #[tracing::instrument(skip_all)]
    async fn update_subject(&self, request: Request<UpdateSubjectRequest>) -> Reply<Subject> {
        let r = request.into_inner();
        let subject = required(r.subject, "subject").map_err(status)?;
        let updated = subjects::update(&self.store, subject, r.update_mask.as_ref())
            .await
            .map_err(status)?;
        Ok(Response::new(updated))
    }

    #[tracing::instrument(skip_all, fields(name = %request.get_ref().name))]
    async fn delete_subject(&self, request: Request<DeleteSubjectRequest>) -> Reply<()> {
        let r = request.into_inner();
        subjects::delete(&self.store, &r.name, &r.etag)
            .await
            .map_err(status)?;
        Ok(Response::new(()))
    }

    #[tracing::instrument(skip_all, fields(name = %request.get_ref().name))]
    async fn get_transition(&self, request: Request<GetTransitionRequest>) -> Reply<Transition> {
        let transition = transitions::get(&self.store, &request.get_ref().name)
            .await
            .map_err(status)?;
        Ok(Response::new(transition))
    }

    #[tracing::instrument(skip_all, fields(parent = %request.get_ref().parent))]
    async fn list_transitions(
        &self,
        request: Request<ListTransitionsRequest>,
    ) -> Reply<ListTransitionsResponse> {
        let page = transitions::list(&self.store, request.into_inner())
            .await
            .map_err(status)?;
        Ok(Response::new(ListTransitionsResponse {
            transitions: page.items,
            next_page_token: page.next_page_token,
        }))
    }
}
