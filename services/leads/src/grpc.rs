//! gRPC handlers: unpack the request, call the domain, map the error. Nothing else lives here.

use kizuna_errors::required;
use kizuna_proto::leads::leads_service_server::LeadsService;
use kizuna_proto::leads::*;
use kizuna_store::Store;
use kizuna_store::api::{EventStream, watch_events};
use kizuna_store::list_query;
use tonic::{Request, Response, Status};

use crate::error::{DOMAIN, Error};
use crate::tables::{Activities, Leads, RescoringJobs, ScoringModels, Segments};
use crate::{activities, capture, scoring, segments, stages};

/// The `kizuna.leads.v1.LeadsService` implementation.
#[derive(Clone, Debug)]
pub struct LeadsApi {
    store: Store,
    jobs: scoring::jobs::Runner,
}

impl LeadsApi {
    /// Handlers over `store`; `jobs` is woken when a publication starts a rescoring job.
    pub fn new(store: Store, jobs: scoring::jobs::Runner) -> Self {
        Self { store, jobs }
    }

    fn started(&self, started: bool) {
        if started {
            self.jobs.wake();
        }
    }
}

fn status(error: impl Into<Error>) -> Status {
    error.into().into()
}

type Reply<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl LeadsService for LeadsApi {
    #[tracing::instrument(skip_all, fields(name = %request.get_ref().name))]
    async fn get_lead(&self, request: Request<GetLeadRequest>) -> Reply<Lead> {
        let lead = capture::get(&self.store, &request.get_ref().name)
            .await
            .map_err(status)?;
        Ok(Response::new(lead))
    }

    #[tracing::instrument(skip_all)]
    async fn list_leads(&self, request: Request<ListLeadsRequest>) -> Reply<ListLeadsResponse> {
        let query = list_query!(request.into_inner());
        let page = self.store.list::<Leads>(&query).await.map_err(status)?;
        Ok(Response::new(ListLeadsResponse {
            leads: page.items,
            next_page_token: page.next_page_token,
        }))
    }

    #[tracing::instrument(skip_all, fields(request_id = %request.get_ref().request_id))]
    async fn create_lead(&self, request: Request<CreateLeadRequest>) -> Reply<Lead> {
        let r = request.into_inner();
        let lead = required(r.lead, "lead").map_err(status)?;
        let created = capture::create(&self.store, lead, &r.lead_id, &r.request_id)
            .await
            .map_err(status)?;
        Ok(Response::new(created))
    }

    #[tracing::instrument(skip_all, fields(request_id = %request.get_ref().request_id))]
    async fn capture_lead(
        &self,
        request: Request<CaptureLeadRequest>,
    ) -> Reply<CaptureLeadResponse> {
        let r = request.into_inner();
        let lead = required(r.lead, "lead").map_err(status)?;
        let captured = capture::capture(&self.store, lead, &r.request_id)
            .await
            .map_err(status)?;
        Ok(Response::new(captured))
    }

    #[tracing::instrument(skip_all)]
    async fn import_leads(
        &self,
        request: Request<tonic::Streaming<ImportLeadsRequest>>,
    ) -> Reply<ImportLeadsResponse> {
        let imported = capture::import(&self.store, request.into_inner())
            .await
            .map_err(status)?;
        Ok(Response::new(imported))
    }

    #[tracing::instrument(skip_all, fields(lead = %request.get_ref().lead, merged_lead = %request.get_ref().merged_lead))]
    async fn merge_leads(&self, request: Request<MergeLeadsRequest>) -> Reply<Lead> {
        let merged = capture::merge(&self.store, request.into_inner())
            .await
            .map_err(status)?;
        Ok(Response::new(merged))
    }

    #[tracing::instrument(skip_all)]
    async fn update_lead(&self, request: Request<UpdateLeadRequest>) -> Reply<Lead> {
        let r = request.into_inner();
        let lead = required(r.lead, "lead").map_err(status)?;
        let updated = capture::update(&self.store, lead, r.update_mask.as_ref())
            .await
            .map_err(status)?;
        Ok(Response::new(updated))
    }

    #[tracing::instrument(skip_all, fields(name = %request.get_ref().name))]
    async fn delete_lead(&self, request: Request<DeleteLeadRequest>) -> Reply<()> {
        let r = request.into_inner();
        capture::delete(&self.store, &r.name, &r.etag)
            .await
            .map_err(status)?;
        Ok(Response::new(()))
    }

    #[tracing::instrument(skip_all, fields(name = %request.get_ref().name))]
    async fn get_activity(&self, request: Request<GetActivityRequest>) -> Reply<Activity> {
        let name = capture::live_activity_name(&self.store, &request.get_ref().name)
            .await
            .map_err(status)?;
        let activity = self.store.get::<Activities>(&name).await.map_err(status)?;
        Ok(Response::new(activity))
    }

    #[tracing::instrument(skip_all, fields(parent = %request.get_ref().parent))]
    async fn list_activities(
        &self,
        request: Request<ListActivitiesRequest>,
    ) -> Reply<ListActivitiesResponse> {
        let mut r = request.into_inner();
        if r.parent != "leads/-" {
            r.parent = capture::live_lead_name(&self.store, &r.parent)
                .await
                .map_err(status)?;
        }
        let query = list_query!(r, parent);
        let page = self
            .store
            .list::<Activities>(&query)
            .await
            .map_err(status)?;
        Ok(Response::new(ListActivitiesResponse {
            activities: page.items,
            next_page_token: page.next_page_token,
        }))
    }

    #[tracing::instrument(skip_all, fields(parent = %request.get_ref().parent, request_id = %request.get_ref().request_id))]
    async fn create_activity(&self, request: Request<CreateActivityRequest>) -> Reply<Activity> {
        let r = request.into_inner();
        let activity = required(r.activity, "activity").map_err(status)?;
        let created = activities::create(
            &self.store,
            &r.parent,
            activity,
            &r.activity_id,
            &r.request_id,
        )
        .await
        .map_err(status)?;
        Ok(Response::new(created))
    }

    #[tracing::instrument(skip_all, fields(parent = %request.get_ref().parent, request_id = %request.get_ref().request_id))]
    async fn track_activity(
        &self,
        request: Request<TrackActivityRequest>,
    ) -> Reply<TrackActivityResponse> {
        let r = request.into_inner();
        let activity = required(r.activity, "activity").map_err(status)?;
        let (activity, lead) = activities::track(&self.store, &r.parent, activity, &r.request_id)
            .await
            .map_err(status)?;
        Ok(Response::new(TrackActivityResponse {
            activity: Some(activity),
            lead: Some(lead),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn track_activities(
        &self,
        request: Request<tonic::Streaming<TrackActivitiesRequest>>,
    ) -> Reply<TrackActivitiesResponse> {
        let tracked = activities::ingest::track_many(&self.store, request.into_inner())
            .await
            .map_err(status)?;
        Ok(Response::new(tracked))
    }

    #[tracing::instrument(skip_all, fields(name = %request.get_ref().name))]
    async fn get_lead_score(&self, request: Request<GetLeadScoreRequest>) -> Reply<LeadScore> {
        let r = request.into_inner();
        let name = capture::live_lead_name(&self.store, &r.name)
            .await
            .map_err(status)?;
        let score = scoring::explain::lead_score(&self.store, &name, r.as_of)
            .await
            .map_err(status)?;
        Ok(Response::new(score))
    }

    #[tracing::instrument(skip_all, fields(name = %request.get_ref().name, deal = %request.get_ref().deal))]
    async fn mark_handed_off(&self, request: Request<MarkHandedOffRequest>) -> Reply<Lead> {
        let r = request.into_inner();
        let name = capture::live_lead_name(&self.store, &r.name)
            .await
            .map_err(status)?;
        let lead = stages::mark_handed_off(&self.store, &name, &r.deal, &r.request_id)
            .await
            .map_err(status)?;
        Ok(Response::new(lead))
    }

    #[tracing::instrument(skip_all, fields(name = %request.get_ref().name))]
    async fn recycle_lead(&self, request: Request<RecycleLeadRequest>) -> Reply<Lead> {
        let r = request.into_inner();
        let name = capture::live_lead_name(&self.store, &r.name)
            .await
            .map_err(status)?;
        let lead = stages::recycle(&self.store, &name, &r.reason, r.reset_score)
            .await
            .map_err(status)?;
        Ok(Response::new(lead))
    }

    #[tracing::instrument(skip_all, fields(name = %request.get_ref().name))]
    async fn disqualify_lead(&self, request: Request<DisqualifyLeadRequest>) -> Reply<Lead> {
        let r = request.into_inner();
        let name = capture::live_lead_name(&self.store, &r.name)
            .await
            .map_err(status)?;
        let lead = stages::disqualify(&self.store, &name, &r.reason)
            .await
            .map_err(status)?;
        Ok(Response::new(lead))
    }

    #[tracing::instrument(skip_all, fields(parent = %request.get_ref().parent))]
    async fn list_stage_changes(
        &self,
        request: Request<ListStageChangesRequest>,
    ) -> Reply<ListStageChangesResponse> {
        let r = request.into_inner();
        let parent = capture::live_lead_name(&self.store, &r.parent)
            .await
            .map_err(status)?;
        let page = stages::list_changes(&self.store, &parent, r.page_size, &r.page_token)
            .await
            .map_err(status)?;
        Ok(Response::new(page))
    }

    #[tracing::instrument(skip_all, fields(name = %request.get_ref().name))]
    async fn get_scoring_model(
        &self,
        request: Request<GetScoringModelRequest>,
    ) -> Reply<ScoringModel> {
        let model = self
            .store
            .get::<ScoringModels>(&request.get_ref().name)
            .await
            .map_err(status)?;
        Ok(Response::new(model))
    }

    #[tracing::instrument(skip_all)]
    async fn list_scoring_models(
        &self,
        request: Request<ListScoringModelsRequest>,
    ) -> Reply<ListScoringModelsResponse> {
        let query = list_query!(request.into_inner());
        let page = self
            .store
            .list::<ScoringModels>(&query)
            .await
            .map_err(status)?;
        Ok(Response::new(ListScoringModelsResponse {
            scoring_models: page.items,
            next_page_token: page.next_page_token,
        }))
    }

    #[tracing::instrument(skip_all, fields(request_id = %request.get_ref().request_id))]
    async fn create_scoring_model(
        &self,
        request: Request<CreateScoringModelRequest>,
    ) -> Reply<ScoringModel> {
        let r = request.into_inner();
        let model = required(r.scoring_model, "scoring_model").map_err(status)?;
        let (created, started) =
            scoring::create(&self.store, model, &r.scoring_model_id, &r.request_id)
                .await
                .map_err(status)?;
        self.started(started);
        Ok(Response::new(created))
    }

    #[tracing::instrument(skip_all)]
    async fn update_scoring_model(
        &self,
        request: Request<UpdateScoringModelRequest>,
    ) -> Reply<ScoringModel> {
        let r = request.into_inner();
        let model = required(r.scoring_model, "scoring_model").map_err(status)?;
        let (updated, started) = scoring::update(&self.store, model, r.update_mask.as_ref())
            .await
            .map_err(status)?;
        self.started(started);
        Ok(Response::new(updated))
    }

    #[tracing::instrument(skip_all, fields(name = %request.get_ref().name))]
    async fn delete_scoring_model(&self, request: Request<DeleteScoringModelRequest>) -> Reply<()> {
        let r = request.into_inner();
        self.store
            .delete::<ScoringModels>(&r.name, &r.etag)
            .await
            .map_err(status)?;
        Ok(Response::new(()))
    }

    #[tracing::instrument(skip_all, fields(name = %request.get_ref().name))]
    async fn get_rescoring_job(
        &self,
        request: Request<GetRescoringJobRequest>,
    ) -> Reply<RescoringJob> {
        let job = self
            .store
            .get::<RescoringJobs>(&request.get_ref().name)
            .await
            .map_err(status)?;
        Ok(Response::new(job))
    }

    #[tracing::instrument(skip_all)]
    async fn list_rescoring_jobs(
        &self,
        request: Request<ListRescoringJobsRequest>,
    ) -> Reply<ListRescoringJobsResponse> {
        let query = list_query!(request.into_inner());
        let page = self
            .store
            .list::<RescoringJobs>(&query)
            .await
            .map_err(status)?;
        Ok(Response::new(ListRescoringJobsResponse {
            rescoring_jobs: page.items,
            next_page_token: page.next_page_token,
        }))
    }

    #[tracing::instrument(skip_all, fields(name = %request.get_ref().name))]
    async fn get_segment(&self, request: Request<GetSegmentRequest>) -> Reply<Segment> {
        let segment = self
            .store
            .get::<Segments>(&request.get_ref().name)
            .await
            .map_err(status)?;
        Ok(Response::new(segment))
    }

    #[tracing::instrument(skip_all)]
    async fn list_segments(
        &self,
        request: Request<ListSegmentsRequest>,
    ) -> Reply<ListSegmentsResponse> {
        let query = list_query!(request.into_inner());
        let page = self.store.list::<Segments>(&query).await.map_err(status)?;
        Ok(Response::new(ListSegmentsResponse {
            segments: page.items,
            next_page_token: page.next_page_token,
        }))
    }

    #[tracing::instrument(skip_all, fields(request_id = %request.get_ref().request_id))]
    async fn create_segment(&self, request: Request<CreateSegmentRequest>) -> Reply<Segment> {
        let r = request.into_inner();
        let segment = required(r.segment, "segment").map_err(status)?;
        let created = segments::create(&self.store, segment, &r.segment_id, &r.request_id)
            .await
            .map_err(status)?;
        Ok(Response::new(created))
    }

    #[tracing::instrument(skip_all)]
    async fn update_segment(&self, request: Request<UpdateSegmentRequest>) -> Reply<Segment> {
        let r = request.into_inner();
        let segment = required(r.segment, "segment").map_err(status)?;
        let updated = segments::update(&self.store, segment, r.update_mask.as_ref())
            .await
            .map_err(status)?;
        Ok(Response::new(updated))
    }

    #[tracing::instrument(skip_all, fields(name = %request.get_ref().name))]
    async fn delete_segment(&self, request: Request<DeleteSegmentRequest>) -> Reply<()> {
        let r = request.into_inner();
        self.store
            .delete::<Segments>(&r.name, &r.etag)
            .await
            .map_err(status)?;
        Ok(Response::new(()))
    }

    #[tracing::instrument(skip_all, fields(name = %request.get_ref().name))]
    async fn count_segment_members(
        &self,
        request: Request<CountSegmentMembersRequest>,
    ) -> Reply<CountSegmentMembersResponse> {
        let counted = segments::count(&self.store, &request.get_ref().name)
            .await
            .map_err(status)?;
        Ok(Response::new(counted))
    }

    #[tracing::instrument(skip_all, fields(name = %request.get_ref().name))]
    async fn list_segment_members(
        &self,
        request: Request<ListSegmentMembersRequest>,
    ) -> Reply<ListSegmentMembersResponse> {
        let r = request.into_inner();
        let page = segments::list_members(&self.store, &r.name, r.page_size, &r.page_token)
            .await
            .map_err(status)?;
        Ok(Response::new(page))
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
