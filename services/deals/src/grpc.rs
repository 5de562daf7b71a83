//! gRPC handlers: unpack the request, call the domain, map the error. Nothing else lives here.

use kizuna_errors::required;
use kizuna_proto::deals::deals_service_server::DealsService;
use kizuna_proto::deals::*;
use kizuna_store::Store;
use kizuna_store::api::{EventStream, watch_events};
use kizuna_store::list_query;
use tonic::{Request, Response, Status};

use crate::error::{DOMAIN, Error};
use crate::tables::{Contacts, Deals, Pipelines};
use crate::{contacts, deals, pipelines};

/// The `kizuna.deals.v1.DealsService` implementation.
#[derive(Clone, Debug)]
pub struct DealsApi {
    store: Store,
}

impl DealsApi {
    /// Handlers over `store`.
    pub fn new(store: Store) -> Self {
        Self { store }
    }
}

fn status(error: impl Into<Error>) -> Status {
    error.into().into()
}

type Reply<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl DealsService for DealsApi {
    #[tracing::instrument(skip_all, fields(name = %request.get_ref().name))]
    async fn get_pipeline(&self, request: Request<GetPipelineRequest>) -> Reply<Pipeline> {
        let pipeline = self
            .store
            .get::<Pipelines>(&request.get_ref().name)
            .await
            .map_err(status)?;
        Ok(Response::new(pipeline))
    }

    #[tracing::instrument(skip_all)]
    async fn list_pipelines(
        &self,
        request: Request<ListPipelinesRequest>,
    ) -> Reply<ListPipelinesResponse> {
        let query = list_query!(request.into_inner());
        let page = self.store.list::<Pipelines>(&query).await.map_err(status)?;
        Ok(Response::new(ListPipelinesResponse {
            pipelines: page.items,
            next_page_token: page.next_page_token,
        }))
    }

    #[tracing::instrument(skip_all, fields(request_id = %request.get_ref().request_id))]
    async fn create_pipeline(&self, request: Request<CreatePipelineRequest>) -> Reply<Pipeline> {
        let r = request.into_inner();
        let pipeline = required(r.pipeline, "pipeline").map_err(status)?;
        let created = pipelines::create(&self.store, pipeline, &r.pipeline_id, &r.request_id)
            .await
            .map_err(status)?;
        Ok(Response::new(created))
    }

    #[tracing::instrument(skip_all)]
    async fn update_pipeline(&self, request: Request<UpdatePipelineRequest>) -> Reply<Pipeline> {
        let r = request.into_inner();
        let pipeline = required(r.pipeline, "pipeline").map_err(status)?;
        let updated = pipelines::update(&self.store, pipeline, r.update_mask.as_ref())
            .await
            .map_err(status)?;
        Ok(Response::new(updated))
    }

    #[tracing::instrument(skip_all, fields(name = %request.get_ref().name))]
    async fn delete_pipeline(&self, request: Request<DeletePipelineRequest>) -> Reply<()> {
        let r = request.into_inner();
        pipelines::delete(&self.store, &r.name, &r.etag)
            .await
            .map_err(status)?;
        Ok(Response::new(()))
    }

    #[tracing::instrument(skip_all, fields(name = %request.get_ref().name))]
    async fn get_deal(&self, request: Request<GetDealRequest>) -> Reply<Deal> {
        let deal = self
            .store
            .get::<Deals>(&request.get_ref().name)
            .await
            .map_err(status)?;
        Ok(Response::new(deal))
    }

    #[tracing::instrument(skip_all)]
    async fn list_deals(&self, request: Request<ListDealsRequest>) -> Reply<ListDealsResponse> {
        let query = list_query!(request.into_inner());
        let page = self.store.list::<Deals>(&query).await.map_err(status)?;
        Ok(Response::new(ListDealsResponse {
            deals: page.items,
            next_page_token: page.next_page_token,
        }))
    }

    #[tracing::instrument(skip_all, fields(request_id = %request.get_ref().request_id))]
    async fn create_deal(&self, request: Request<CreateDealRequest>) -> Reply<Deal> {
        let r = request.into_inner();
        let deal = required(r.deal, "deal").map_err(status)?;
        let created = deals::create(&self.store, deal, &r.deal_id, &r.request_id)
            .await
            .map_err(status)?;
        Ok(Response::new(created))
    }

    #[tracing::instrument(skip_all)]
    async fn update_deal(&self, request: Request<UpdateDealRequest>) -> Reply<Deal> {
        let r = request.into_inner();
        let deal = required(r.deal, "deal").map_err(status)?;
        let updated = deals::update(&self.store, deal, r.update_mask.as_ref())
            .await
            .map_err(status)?;
        Ok(Response::new(updated))
    }

    #[tracing::instrument(skip_all, fields(name = %request.get_ref().name))]
    async fn delete_deal(&self, request: Request<DeleteDealRequest>) -> Reply<()> {
        let r = request.into_inner();
        deals::delete(&self.store, &r.name, &r.etag)
            .await
            .map_err(status)?;
        Ok(Response::new(()))
    }

    #[tracing::instrument(skip_all, fields(name = %request.get_ref().name))]
    async fn get_contact(&self, request: Request<GetContactRequest>) -> Reply<Contact> {
        let contact = self
            .store
            .get::<Contacts>(&request.get_ref().name)
            .await
            .map_err(status)?;
        Ok(Response::new(contact))
    }

    #[tracing::instrument(skip_all)]
    async fn list_contacts(
        &self,
        request: Request<ListContactsRequest>,
    ) -> Reply<ListContactsResponse> {
        let query = list_query!(request.into_inner());
        let page = self.store.list::<Contacts>(&query).await.map_err(status)?;
        Ok(Response::new(ListContactsResponse {
            contacts: page.items,
            next_page_token: page.next_page_token,
        }))
    }

    #[tracing::instrument(skip_all, fields(request_id = %request.get_ref().request_id))]
    async fn create_contact(&self, request: Request<CreateContactRequest>) -> Reply<Contact> {
        let r = request.into_inner();
        let contact = required(r.contact, "contact").map_err(status)?;
        let created = contacts::create(&self.store, contact, &r.contact_id, &r.request_id)
            .await
            .map_err(status)?;
        Ok(Response::new(created))
    }

    #[tracing::instrument(skip_all)]
    async fn update_contact(&self, request: Request<UpdateContactRequest>) -> Reply<Contact> {
        let r = request.into_inner();
        let contact = required(r.contact, "contact").map_err(status)?;
        let updated = contacts::update(&self.store, contact, r.update_mask.as_ref())
            .await
            .map_err(status)?;
        Ok(Response::new(updated))
    }

    #[tracing::instrument(skip_all, fields(name = %request.get_ref().name))]
    async fn delete_contact(&self, request: Request<DeleteContactRequest>) -> Reply<()> {
        let r = request.into_inner();
        self.store
            .delete::<Contacts>(&r.name, &r.etag)
            .await
            .map_err(status)?;
        Ok(Response::new(()))
    }

    type WatchEventsStream = EventStream<WatchEventsResponse>;

    #[tracing::instrument(skip_all, fields(after_sequence = request.get_ref().after_sequence))]
    async fn watch_events(
        &self,
        request: Request<WatchEventsRequest>,
    ) -> Reply<Self::WatchEventsStream> {
        let r = request.into_inner();
        let stream = watch_events(&self.store, r.after_sequence, r.types, DOMAIN, |event| {
            WatchEventsResponse { event: Some(event) }
        })?;
        Ok(Response::new(stream))
    }
}
