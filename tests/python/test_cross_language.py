"""A Python grpcio client, generated from proto/, drives the public API of a running `kizuna up`:
unary calls, a client stream, errors, health and reflection."""

import uuid

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc


def auth(token):
    return (("authorization", f"Bearer {token}"),)


def test_create_and_read_back_a_lead(stubs, suite):
    from kizuna.leads.v1 import leads_pb2, leads_pb2_grpc, lead_pb2

    with grpc.insecure_channel(suite["ports"]["leads"]) as channel:
        client = leads_pb2_grpc.LeadsServiceStub(channel)
        email = f"py-{uuid.uuid4().hex[:8]}@example.jp"
        request = leads_pb2.CreateLeadRequest(
            lead=lead_pb2.Lead(email=email, family_name="山田", given_name="花子", phone="03-1234-5678"),
            request_id=str(uuid.uuid4()),
        )
        created = client.CreateLead(request, metadata=auth(suite["token"]))
        assert created.name.startswith("leads/")
        again = client.CreateLead(request, metadata=auth(suite["token"]))
        assert again == created, "a retried create returns the first result"

        fetched = client.GetLead(leads_pb2.GetLeadRequest(name=created.name), metadata=auth(suite["token"]))
        assert fetched.email == email
        assert fetched.family_name == "山田"

        with pytest.raises(grpc.RpcError) as missing_token:
            client.GetLead(leads_pb2.GetLeadRequest(name=created.name))
        assert missing_token.value.code() == grpc.StatusCode.UNAUTHENTICATED

        with pytest.raises(grpc.RpcError) as bad:
            client.CreateLead(
                leads_pb2.CreateLeadRequest(lead=lead_pb2.Lead(email="not-an-email")), metadata=auth(suite["token"])
            )
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "lead.email" in bad.value.details()


def test_health_is_serving_everywhere(suite):
    for service, address in suite["ports"].items():
        with grpc.insecure_channel(address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            reply = health.Check(health_pb2.HealthCheckRequest(service=""))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING, service


def test_reflection_lists_the_services(suite):
    expected = {
        "leads": "kizuna.leads.v1.LeadsService",
        "deals": "kizuna.deals.v1.DealsService",
        "accounts": "kizuna.accounts.v1.AccountsService",
        "gateway": "kizuna.gateway.v1.GatewayService",
    }
    for service, address in suite["ports"].items():
        with grpc.insecure_channel(address) as channel:
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)
            replies = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
            names = {s.name for reply in replies for s in reply.list_services_response.service}
            assert expected[service] in names, (service, names)
            assert "grpc.health.v1.Health" in names


def test_capture_stream_and_score_a_lead(stubs, suite):
    """CaptureLead merges spellings of one person; a client stream of activities scores the lead
    under a published model; the explained score sums to the score."""
    from kizuna.leads.v1 import leads_pb2, leads_pb2_grpc, lead_pb2, activity_pb2, scoring_model_pb2

    metadata = auth(suite["token"])
    with grpc.insecure_channel(suite["ports"]["leads"]) as channel:
        client = leads_pb2_grpc.LeadsServiceStub(channel)
        model = scoring_model_pb2.ScoringModel(
            display_name=f"py-{uuid.uuid4().hex[:6]}",
            half_life_days=30.0,
            mql_score_threshold=1000.0,
            state=scoring_model_pb2.ScoringModel.STATE_PUBLISHED,
            engagement_rules=[
                scoring_model_pb2.ScoringModel.EngagementRule(
                    rule_id="pricing",
                    activity_kind=activity_pb2.ACTIVITY_KIND_PAGE_VIEW,
                    url_contains="/pricing",
                    points=10.0,
                )
            ],
        )
        client.CreateScoringModel(leads_pb2.CreateScoringModelRequest(scoring_model=model), metadata=metadata)

        suffix = uuid.uuid4().hex[:8]
        first = client.CaptureLead(
            leads_pb2.CaptureLeadRequest(lead=lead_pb2.Lead(email=f"py-{suffix}@example.jp")), metadata=metadata
        )
        assert first.outcome == leads_pb2.CAPTURE_OUTCOME_CREATED
        # The same address in full-width capitals is the same person.
        full_width = "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in f"PY-{suffix}@EXAMPLE.JP")
        second = client.CaptureLead(
            leads_pb2.CaptureLeadRequest(lead=lead_pb2.Lead(email=full_width, company="Kizuna KK")), metadata=metadata
        )
        assert second.outcome == leads_pb2.CAPTURE_OUTCOME_MERGED
        assert second.lead.name == first.lead.name
        assert second.lead.company == "Kizuna KK"

        def batches():
            for start in range(0, 30, 10):
                yield leads_pb2.TrackActivitiesRequest(
                    activities=[
                        leads_pb2.TrackActivityRequest(
                            parent=first.lead.name,
                            activity=activity_pb2.Activity(
                                kind=activity_pb2.ACTIVITY_KIND_PAGE_VIEW,
                                url=f"https://example.jp/pricing?v={i}",
                            ),
                            request_id=f"py-{suffix}-{i}",
                        )
                        for i in range(start, start + 10)
                    ]
                )
            yield leads_pb2.TrackActivitiesRequest(
                activities=[leads_pb2.TrackActivityRequest(parent="leads/nobody", activity=activity_pb2.Activity())]
            )

        tracked = client.TrackActivities(batches(), metadata=metadata)
        assert tracked.accepted_count == 30
        assert tracked.failed_count == 1
        assert [f.index for f in tracked.failures] == [30]

        score = client.GetLeadScore(leads_pb2.GetLeadScoreRequest(name=first.lead.name), metadata=metadata)
        assert 299.0 < score.score <= 300.0, score.score
        assert abs(sum(c.points for c in score.contributions) - score.score) < 1e-9
