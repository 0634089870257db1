"""Background jobs and Message Batches in-process: fakeredis, a worker thread, the anthropic SDK."""

from datetime import datetime, timezone
import json
import time

import anthropic
import pytest
from rq.job import Job, JobStatus

from api.job_views import job_view
from hearth import reaper
from hearth.contract import QUEUE_BACKGROUND, worker_heartbeat_key
from tests.conftest import ScriptedEngine, poll_job, sse_events
from tests.test_api import ANSWER
from tests.test_reaper import started_by
from tests.test_worker_jobs import request

REQUEST = {"model": "claude-opus-4-6", "max_tokens": 50, "messages": [{"role": "user", "content": "work on it"}],
           "thinking": {"type": "adaptive"}}




def test_submit_then_poll_gives_the_message_streaming_gives(client, running_worker):
    running_worker(ScriptedEngine(ANSWER))
    submitted = client.post("/v1/jobs", json={"request": REQUEST, "metadata": {"ticket": "T-1"}, "result_ttl": 600})
    assert submitted.status_code == 202
    job = submitted.json()
    assert len(job["id"]) == 32 and job["events_url"].endswith(f"/v1/jobs/{job['id']}/events")
    view = poll_job(client, job["id"])
    assert view["status"] == "finished" and view["metadata"] == {"ticket": "T-1"}
    assert view["priority"] == "background" and view["started_at"] and view["ended_at"]
    polled = view["message"]

    sdk = anthropic.Anthropic(base_url=str(client.base_url), api_key="x", http_client=client, max_retries=0)
    with sdk.messages.stream(**REQUEST) as stream:
        streamed = stream.get_final_message()
    assert [b["type"] for b in polled["content"]] == [b.type for b in streamed.content]
    assert polled["content"][-1]["text"] == streamed.content[-1].text
    assert polled["usage"]["output_tokens"] == streamed.usage.output_tokens


def test_a_job_that_ends_between_its_fetch_and_its_view_shows_as_fetched(jobs, redis, make_worker):
    job_id = jobs.new_job_id()
    jobs.enqueue(job_id, request(), priority=QUEUE_BACKGROUND)
    fetched = Job.fetch(job_id, connection=redis)
    make_worker(ScriptedEngine(ANSWER)).work(burst=True)

    assert Job.fetch(job_id, connection=redis).get_status() == JobStatus.FINISHED
    as_fetched = job_view(redis, fetched)
    assert as_fetched["status"] == "queued" and as_fetched["ended_at"] is None and "message" not in as_fetched
    now = job_view(redis, Job.fetch(job_id, connection=redis))
    assert now["status"] == "finished" and now["ended_at"] and now["message"]["content"]


def test_a_started_job_that_ends_while_the_api_checks_its_worker_shows_as_fetched(jobs, redis):
    # Polling a running job checks that its worker still beats; the job may end in between, and
    # its view must not then say finished with no end time (CI saw `ended_at` None).
    redis.set(worker_heartbeat_key("alive"), json.dumps({"pid": 1}), ex=60)
    fetched = started_by(jobs, redis, "alive", QUEUE_BACKGROUND)
    ended = Job.fetch(fetched.id, connection=redis)
    ended.set_status(JobStatus.FINISHED)
    ended.ended_at = datetime.now(timezone.utc)
    ended.save()

    assert reaper.fail_if_abandoned(redis, fetched, event_ttl=60) is None
    view = job_view(redis, fetched)
    assert view["status"] == "started" and view["ended_at"] is None and "progress" in view


def test_polling_a_dead_workers_job_shows_it_failed_at_once(client, jobs, redis):
    job = started_by(jobs, redis, "ghost", QUEUE_BACKGROUND)
    view = client.get(f"/v1/jobs/{job.id}").json()
    assert view["status"] == "failed" and "ghost" in view["error"]["message"]


def test_events_replay_resume_without_gaps_or_duplicates(client, running_worker):
    running_worker(ScriptedEngine(ANSWER))
    job_id = client.post("/v1/jobs", json={"request": REQUEST}).json()["id"]
    poll_job(client, job_id)
    with client.stream("GET", f"/v1/jobs/{job_id}/events") as response:
        full = response.read().decode()
    events = sse_events(full)
    assert events[0][0] == "message_start" and events[-1][0] == "message_stop"
    ids = [int(line[4:]) for line in full.splitlines() if line.startswith("id: ")]
    middle = ids[len(ids) // 2]
    with client.stream("GET", f"/v1/jobs/{job_id}/events", headers={"Last-Event-ID": str(middle)}) as response:
        rest = response.read().decode()
    rest_ids = [int(line[4:]) for line in rest.splitlines() if line.startswith("id: ")]
    assert rest_ids[0] == middle + 1, "a gap after the resume point"
    first_part = [i for i in ids if i <= middle]
    assert sorted(set(first_part + rest_ids)) == sorted(set(ids)) and not set(first_part) & set(rest_ids)
    assert "message_start" not in rest and sse_events(rest)[-1][0] == "message_stop"
    with client.stream("GET", f"/v1/jobs/{job_id}/events?after={middle}") as response:
        assert response.read().decode() == rest


def test_events_of_a_job_whose_log_expired_end_with_an_explicit_error(client, redis, running_worker):
    running_worker(ScriptedEngine(ANSWER))
    job_id = client.post("/v1/jobs", json={"request": REQUEST}).json()["id"]
    poll_job(client, job_id)
    redis.delete(f"hearth:events:{job_id}")
    with client.stream("GET", f"/v1/jobs/{job_id}/events?after=3") as response:
        events = sse_events(response.read().decode())
    assert events[-1][0] == "error" and "no longer retained" in events[-1][1]["error"]["message"]


def test_cancel_a_queued_job_and_a_finished_one(client):
    job_id = client.post("/v1/jobs", json={"request": REQUEST}).json()["id"]
    view = client.get(f"/v1/jobs/{job_id}").json()
    assert view["status"] == "queued" and view["position"] == 0
    assert client.post(f"/v1/jobs/{job_id}/cancel").json()["status"] == "cancelled"
    again = client.delete(f"/v1/jobs/{job_id}")
    assert again.status_code == 409 and again.json()["type"] == "error"


def test_cancel_a_running_job(client, running_worker):
    running_worker(ScriptedEngine(["word "] * 400, delay=0.01))
    job_id = client.post("/v1/jobs", json={"request": dict(REQUEST, max_tokens=1000)}).json()["id"]
    view = poll_job(client, job_id, until=("started",))
    deadline = time.monotonic() + 10
    while not view.get("progress", {}).get("output_tokens") and time.monotonic() < deadline:
        view = client.get(f"/v1/jobs/{job_id}").json()
    assert view["progress"]["output_tokens"] > 0 and "word" in view["progress"]["text"]
    assert client.delete(f"/v1/jobs/{job_id}").status_code == 200
    view = poll_job(client, job_id)
    assert view["status"] == "cancelled" and view["error"]["type"] == "cancelled"
    assert len(view.get("progress", {}).get("text", "")) < 400 * 5


def test_list_filters_and_pages(client, running_worker):
    ids = [client.post("/v1/jobs", json={"request": REQUEST}).json()["id"] for _ in range(3)]
    client.delete(f"/v1/jobs/{ids[0]}")
    page = client.get("/v1/jobs?limit=2").json()
    assert [j["id"] for j in page["data"]] == ids[::-1][:2] and page["has_more"] is True
    rest = client.get(f"/v1/jobs?limit=2&after_id={page['last_id']}").json()
    assert [j["id"] for j in rest["data"]] == [ids[0]] and rest["has_more"] is False
    assert [j["id"] for j in client.get("/v1/jobs?status=cancelled").json()["data"]] == [ids[0]]
    assert client.get("/v1/jobs?status=bogus").status_code == 400


def test_unknown_and_expired_jobs_are_404(client):
    response = client.get("/v1/jobs/0123456789abcdef0123456789abcdef")
    assert response.status_code == 404 and "expired" in response.json()["error"]["message"]


@pytest.mark.parametrize("body, field", [
    ({"request": REQUEST, "priority": "urgent"}, "priority"),
    ({"request": REQUEST, "result_ttl": -5}, "result_ttl"),
    ({"request": dict(REQUEST, max_tokens=0)}, "max_tokens"),
    ({"nothing": True}, "request"),
])
def test_bad_job_submissions_are_400(client, body, field):
    response = client.post("/v1/jobs", json=body)
    assert response.status_code == 400 and field in response.json()["error"]["message"]


def test_message_batches_through_the_anthropic_sdk(client, running_worker):
    running_worker(ScriptedEngine(ANSWER))
    sdk = anthropic.Anthropic(base_url=str(client.base_url), api_key="x", http_client=client, max_retries=0)
    batch = sdk.messages.batches.create(requests=[
        {"custom_id": "first", "params": REQUEST},
        {"custom_id": "second", "params": dict(REQUEST, messages=[{"role": "user", "content": "more"}])},
    ])
    assert batch.id.startswith("msgbatch_") and batch.processing_status == "in_progress"
    deadline = time.monotonic() + 20
    while batch.processing_status != "ended" and time.monotonic() < deadline:
        time.sleep(0.05)
        batch = sdk.messages.batches.retrieve(batch.id)
    assert batch.processing_status == "ended" and batch.request_counts.succeeded == 2
    results = {r.custom_id: r.result for r in sdk.messages.batches.results(batch.id)}
    assert set(results) == {"first", "second"}
    assert results["first"].type == "succeeded" and results["first"].message.content[-1].text == "Hello from Hearth."
    assert batch.id in [b.id for b in sdk.messages.batches.list()]


def test_cancelling_a_batch_cancels_its_queued_requests(client):
    sdk = anthropic.Anthropic(base_url=str(client.base_url), api_key="x", http_client=client, max_retries=0)
    batch = sdk.messages.batches.create(requests=[{"custom_id": f"r{i}", "params": REQUEST} for i in range(3)])
    cancelled = sdk.messages.batches.cancel(batch.id)
    assert cancelled.processing_status == "ended" and cancelled.request_counts.canceled == 3
    assert cancelled.cancel_initiated_at is not None
    assert {r.result.type for r in sdk.messages.batches.results(batch.id)} == {"canceled"}


def test_batch_requests_are_validated(client):
    response = client.post("/v1/messages/batches", json={"requests": [{"custom_id": "a", "params": REQUEST},
                                                                     {"custom_id": "a", "params": REQUEST}]})
    assert response.status_code == 400 and "unique" in response.json()["error"]["message"]
    assert json.loads(client.get("/v1/messages/batches/msgbatch_nope").text)["error"]["type"] == "not_found_error"
