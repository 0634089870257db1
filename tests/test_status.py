"""Metrics and the status page in-process (fakeredis, a scripted worker); tests/integration has the real ones."""

import json
import time

import fakeredis
from prometheus_client.parser import text_string_to_metric_families
from rq import Queue
from starlette.testclient import TestClient

from api.app import create_app
from hearth import status
from hearth.contract import model_queue, worker_heartbeat_key, worker_queue
from hearth.metrics import Tally
from tests.conftest import ScriptedEngine


def samples(text: str) -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_come_from_the_workers_tally_in_redis_and_parse(client, redis):
    tally = Tally()
    tally.add("hearth_jobs_total", queue="interactive", model="m", outcome="finished")
    tally.add("hearth_prompt_tokens_total", 30, model="m", source="cached")
    for seconds in (0.02, 0.3, 7.0):
        tally.observe("hearth_time_to_first_token_seconds", seconds, model="m", queue="interactive")
    pipe = redis.pipeline()
    tally.queue(pipe)
    pipe.execute()
    # Background jobs waiting in a model's queue and in a worker's own: one depth per priority.
    for name in (model_queue("background", "m"), worker_queue("background", "mac")):
        Queue(name, connection=redis).enqueue("workers.jobs.run_message_job", {"model": "m"})
    parsed = samples(client.get("/metrics").text)
    assert parsed[("hearth_jobs_total", (("model", "m"), ("outcome", "finished"), ("queue", "interactive")))] == 1
    assert parsed[("hearth_prompt_tokens_total", (("model", "m"), ("source", "cached")))] == 30
    ttft = (("model", "m"), ("queue", "interactive"))
    assert parsed[("hearth_time_to_first_token_seconds_count", ttft)] == 3
    assert parsed[("hearth_time_to_first_token_seconds_bucket", (("le", "0.5"),) + ttft)] == 2
    assert parsed[("hearth_queue_depth", (("queue", "background"),))] == 2
    assert parsed[("hearth_queue_depth", (("queue", "interactive"),))] == 0
    assert parsed[("hearth_workers", ())] == 0


def test_a_job_moves_the_counters(client, redis, running_worker):
    running_worker(ScriptedEngine(["Hello", " there"]))
    client.post("/v1/messages", json={"model": "claude-sonnet-4-6", "max_tokens": 20,
                                      "messages": [{"role": "user", "content": "hi"}]})
    # The worker sends its counts just after the job's last event: the answer may arrive first.
    deadline = time.monotonic() + 10
    while True:
        parsed = samples(client.get("/metrics").text)
        finished = [v for (name, labels), v in parsed.items() if name == "hearth_jobs_total" and
                    ("outcome", "finished") in labels]
        if finished or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert finished == [1]
    assert sum(v for (name, _), v in parsed.items() if name == "hearth_generation_tokens_total") == 3


def test_the_page_its_stream_and_snapshot(client, redis):
    redis.set(worker_heartbeat_key("w1"), json.dumps({"pid": 7, "jobs": [
        {"id": "abc", "model": "m", "queue": "interactive", "phase": "prefilling", "prefilled": [512, 2048],
         "output_tokens": 0, "tokens_per_second": None}]}), ex=60)
    assert client.get("/", follow_redirects=False).headers["location"] == "/status"
    page = client.get("/status")
    assert page.status_code == 200 and "/status/assets/app.js" in page.text
    assert client.get("/status/assets/app.js").status_code == 200
    snapshot = client.get("/status/snapshot").json()
    assert snapshot["workers"][0]["jobs"][0]["phase"] == "prefilling"
    assert "prefilling 512 of 2048 tokens" in status.summary(snapshot)


def test_with_keys_the_page_needs_one_too(fake_server, settings):
    keyed = settings.__class__(**{**settings.__dict__, "api_keys": ("sesame",)})
    app = create_app(keyed, clients=lambda s: (fakeredis.FakeRedis(server=fake_server),
                                               fakeredis.FakeAsyncRedis(server=fake_server)))
    with TestClient(app) as client:
        assert client.get("/status").status_code == 401
        assert client.get("/status/snapshot").status_code == 401
        assert client.get("/metrics").status_code == 401
        assert client.get("/status?key=sesame").status_code == 200
        assert client.get("/status/snapshot?key=sesame").status_code == 200
        assert client.get("/metrics", headers={"Authorization": "Bearer sesame"}).status_code == 200
        assert client.get("/v1/models?key=sesame").status_code == 401  # a key in the URL is for the page only
