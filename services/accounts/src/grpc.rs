//! gRPC handlers: unpack the request, call the domain, map the error. Nothing else lives here.

use kizuna_errors::required;
use kizuna_proto::accounts::accounts_service_server::AccountsService;
use kizuna_proto::accounts::*;
use kizuna_store::Store;
use kizuna_store::api::{EventStream, watch_events};
use kizuna_store::list_query;
use tonic::{Request, Response, Status};

use crate::error::{DOMAIN, Error};
use crate::tables::{Accounts, Cases, Orders};
use crate::{accounts, cases, orders};

/// The `kizuna.accounts.v1.AccountsService` implementation.
#[derive(Clone, Debug)]
pub struct AccountsApi {
    store: Store,
}

impl AccountsApi {
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
impl AccountsService for AccountsApi {
    #[tracing::instrument(skip_all, fields(name = %request.get_ref().name))]
    async fn get_account(&self, request: Request<GetAccountRequest>) -> Reply<Account> {
        let account = self
            .store
            .get::<Accounts>(&request.get_ref().name)
            .await
            .map_err(status)?;
        Ok(Response::new(account))
    }

    #[tracing::instrument(skip_all)]
    async fn list_accounts(
        &self,
        request: Request<ListAccountsRequest>,
    ) -> Reply<ListAccountsResponse> {
        let query = list_query!(request.into_inner());
        let page = self.store.list::<Accounts>(&query).await.map_err(status)?;
        Ok(Response::new(ListAccountsResponse {
            accounts: page.items,
            next_page_token: page.next_page_token,
        }))
    }

    #[tracing::instrument(skip_all, fields(request_id = %request.get_ref().request_id))]
    async fn create_account(&self, request: Request<CreateAccountRequest>) -> Reply<Account> {
        let r = request.into_inner();
        let account = required(r.account, "account").map_err(status)?;
        let created = accounts::create(&self.store, account, &r.account_id, &r.request_id)
            .await
            .map_err(status)?;
        Ok(Response::new(created))
    }

    #[tracing::instrument(skip_all)]
    async fn update_account(&self, request: Request<UpdateAccountRequest>) -> Reply<Account> {
        let r = request.into_inner();
        let account = required(r.account, "account").map_err(status)?;
        let updated = accounts::update(&self.store, account, r.update_mask.as_ref())
            .await
            .map_err(status)?;
        Ok(Response::new(updated))
    }

    #[tracing::instrument(skip_all, fields(name = %request.get_ref().name))]
    async fn delete_account(&self, request: Request<DeleteAccountRequest>) -> Reply<()> {
        let r = request.into_inner();
        accounts::delete(&self.store, &r.name, &r.etag)
            .await
            .map_err(status)?;
        Ok(Response::new(()))
    }

    #[tracing::instrument(skip_all, fields(name = %request.get_ref().name))]
    async fn get_order(&self, request: Request<GetOrderRequest>) -> Reply<Order> {
        let order = self
            .store
            .get::<Orders>(&request.get_ref().name)
            .await
            .map_err(status)?;
        Ok(Response::new(order))
    }

    #[tracing::instrument(skip_all, fields(parent = %request.get_ref().parent))]
    async fn list_orders(&self, request: Request<ListOrdersRequest>) -> Reply<ListOrdersResponse> {
        let query = list_query!(request.into_inner(), parent);
        let page = self.store.list::<Orders>(&query).await.map_err(status)?;
        Ok(Response::new(ListOrdersResponse {
            orders: page.items,
            next_page_token: page.next_page_token,
        }))
    }

    #[tracing::instrument(skip_all, fields(parent = %request.get_ref().parent, request_id = %request.get_ref().request_id))]
    async fn create_order(&self, request: Request<CreateOrderRequest>) -> Reply<Order> {
        let r = request.into_inner();
        let order = required(r.order, "order").map_err(status)?;
        let created = orders::create(&self.store, &r.parent, order, &r.order_id, &r.request_id)
            .await
            .map_err(status)?;
        Ok(Response::new(created))
    }

    #[tracing::instrument(skip_all)]
    async fn update_order(&self, request: Request<UpdateOrderRequest>) -> Reply<Order> {
        let r = request.into_inner();
        let order = required(r.order, "order").map_err(status)?;
        let updated = orders::update(&self.store, order, r.update_mask.as_ref())
            .await
            .map_err(status)?;
        Ok(Response::new(updated))
    }

    #[tracing::instrument(skip_all, fields(name = %request.get_ref().name))]
    async fn delete_order(&self, request: Request<DeleteOrderRequest>) -> Reply<()> {
        let r = request.into_inner();
        self.store
            .delete::<Orders>(&r.name, &r.etag)
            .await
            .map_err(status)?;
        Ok(Response::new(()))
    }

    #[tracing::instrument(skip_all, fields(name = %request.get_ref().name))]
    async fn get_case(&self, request: Request<GetCaseRequest>) -> Reply<Case> {
        let case = self
            .store
            .get::<Cases>(&request.get_ref().name)
            .await
            .map_err(status)?;
        Ok(Response::new(case))
    }

    #[tracing::instrument(skip_all, fields(parent = %request.get_ref().parent))]
    async fn list_cases(&self, request: Request<ListCasesRequest>) -> Reply<ListCasesResponse> {
        let query = list_query!(request.into_inner(), parent);
        let page = self.store.list::<Cases>(&query).await.map_err(status)?;
        Ok(Response::new(ListCasesResponse {
            cases: page.items,
            next_page_token: page.next_page_token,
        }))
    }

    #[tracing::instrument(skip_all, fields(parent = %request.get_ref().parent, request_id = %request.get_ref().request_id))]
    async fn create_case(&self, request: Request<CreateCaseRequest>) -> Reply<Case> {
        let r = request.into_inner();
        let case = required(r.case, "case").map_err(status)?;
        let created = cases::create(&self.store, &r.parent, case, &r.case_id, &r.request_id)
            .await
            .map_err(status)?;
        Ok(Response::new(created))
    }

    #[tracing::instrument(skip_all)]
    async fn update_case(&self, request: Request<UpdateCaseRequest>) -> Reply<Case> {
        let r = request.into_inner();
        let case = required(r.case, "case").map_err(status)?;
        let updated = cases::update(&self.store, case, r.update_mask.as_ref())
            .await
            .map_err(status)?;
        Ok(Response::new(updated))
    }

    #[tracing::instrument(skip_all, fields(name = %request.get_ref().name))]
    async fn delete_case(&self, request: Request<DeleteCaseRequest>) -> Reply<()> {
        let r = request.into_inner();
        self.store
            .delete::<Cases>(&r.name, &r.etag)
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
