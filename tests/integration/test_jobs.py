"""Background jobs, batches and duplicate suppression with the real worker and Redis."""

import json
import subprocess
import sys
import threading
import time

import anthropic
import pytest

from hearth.contract import worker_heartbeat_key
from hearth.message import MessageAssembler
from hearth.models import model_key
from hearth.settings import Settings
from tests.conftest import poll_job, read_log, sse_frames
from tests.integration.conftest import MAIN_KEY

pytestmark = pytest.mark.integration

MAIN = "claude-opus-4-6"
BABBLER = "claude-haiku-4-5"  # never ends by itself
REQUEST = {"model": MAIN, "max_tokens": 60, "temperature": 0, "messages": [{"role": "user", "content": "hello"}]}


def babble(http, priority="background"):
    request = {"model": BABBLER, "max_tokens": 100_000, "messages": [{"role": "user", "content": "go"}]}
    return http.post("/v1/jobs", json={"request": request, "priority": priority}).json()["id"]


def test_submit_and_poll_equals_streaming(hearth, http):
    job_id = http.post("/v1/jobs", json={"request": REQUEST, "metadata": {"agent": "nightly"}}).json()["id"]
    polled = poll_job(http, job_id)["message"]
    sdk = anthropic.Anthropic(base_url=hearth.base_url, api_key="x", max_retries=0)
    request = dict(REQUEST)
    streamed = sdk.messages.create(extra_body={"temperature": request.pop("temperature")}, **request)
    assert [b["type"] for b in polled["content"]] == [b.type for b in streamed.content]
    assert polled["content"][-1]["text"] == streamed.content[-1].text


def test_cancel_a_queued_job_and_a_running_one(hearth, http):
    # Every slot decoding: the next background job waits in the queue.
    running = [babble(http) for _ in range(Settings().max_batch)]
    for job_id in running:
        poll_job(http, job_id, until=("started",))
    queued = http.post("/v1/jobs", json={"request": REQUEST}).json()["id"]
    try:
        assert http.get(f"/v1/jobs/{queued}").json()["status"] == "queued"
        assert http.delete(f"/v1/jobs/{queued}").json()["status"] == "cancelled"
        started = time.monotonic()
        assert http.post(f"/v1/jobs/{running[0]}/cancel").status_code == 200
        view = poll_job(http, running[0])
        assert view["status"] == "cancelled" and time.monotonic() - started < 5
        time.sleep(0.5)
        assert http.get(f"/v1/jobs/{queued}").json()["started_at"] is None, "a cancelled queued job ran"
        assert http.delete(f"/v1/jobs/{running[0]}").status_code == 409
    finally:
        for job_id in running[1:]:
            http.delete(f"/v1/jobs/{job_id}")


def test_resume_an_event_stream_midway(hearth, http):
    job_id = http.post("/v1/jobs", json={"request": REQUEST, "priority": "interactive"}).json()["id"]
    poll_job(http, job_id)
    whole = http.get(f"/v1/jobs/{job_id}/events").text
    ids = [int(line[4:]) for line in whole.splitlines() if line.startswith("id: ")]
    cut = ids[len(ids) // 2]
    rest = http.get(f"/v1/jobs/{job_id}/events", headers={"Last-Event-ID": str(cut)}).text
    rest_ids = [int(line[4:]) for line in rest.splitlines() if line.startswith("id: ")]
    assert rest_ids[0] == cut + 1 and sorted({i for i in ids if i <= cut} | set(rest_ids)) == sorted(set(ids))
    frames = sse_frames(whole)
    joined = [f for f in frames if f["id"] is None or f["id"] <= cut] + sse_frames(rest)
    assert joined == frames


def test_a_live_event_stream_resumes_while_the_job_runs(hearth, http):
    job_id = babble(http, priority="interactive")
    seen = []
    with http.stream("GET", f"/v1/jobs/{job_id}/events") as response:
        for line in response.iter_lines():
            if line.startswith("id: "):
                seen.append(int(line[4:]))
            if len(seen) >= 5:
                break
    with http.stream("GET", f"/v1/jobs/{job_id}/events", headers={"Last-Event-ID": str(seen[-1])}) as response:
        for line in response.iter_lines():
            if line.startswith("id: "):
                assert int(line[4:]) == seen[-1] + 1
                break
    # Watching is passive: the job kept running after both watchers left.
    assert http.get(f"/v1/jobs/{job_id}").json()["status"] == "started"
    http.delete(f"/v1/jobs/{job_id}")
    poll_job(http, job_id)


def event_log_reads(redis) -> int:
    stats = redis.info("commandstats")
    return sum(stats.get(f"cmdstat_{command}", {}).get("calls", 0) for command in ("xrange", "xrevrange", "xread"))


def test_polling_a_long_job_costs_the_same_reads_as_a_short_one(hearth, http):
    job_id = babble(http)
    try:
        views = {}
        for length, tokens in (("short", 100), ("long", 2_000)):
            view = poll_job(http, job_id, until=("started",))
            deadline = time.monotonic() + 120
            while view["progress"]["output_tokens"] < tokens and time.monotonic() < deadline:
                time.sleep(0.05)
                view = http.get(f"/v1/jobs/{job_id}").json()
            reads = event_log_reads(hearth.redis)
            views[length] = [http.get(f"/v1/jobs/{job_id}").json() for _ in range(5)]
            # A running job's progress comes from what the worker keeps as it goes, never from its log.
            assert event_log_reads(hearth.redis) == reads
        short, long = views["short"][-1]["progress"], views["long"][-1]["progress"]
        assert 100 <= short["output_tokens"] < 2_000 <= long["output_tokens"]
        # The text grew with the tokens (about the same characters per token at both polls).
        per_token = [len(view["text"]) / view["output_tokens"] for view in (short, long)]
        assert per_token[0] > 0 and 0.5 < per_token[1] / per_token[0] < 2
        assert long["text"].startswith(short["text"])
    finally:
        http.post(f"/v1/jobs/{job_id}/cancel")
    poll_job(http, job_id)
    # What the polls showed is what the job's event log says it wrote.
    assembler = MessageAssembler()
    for event in read_log(hearth.redis, job_id):
        assembler.apply(event)
    assert assembler.text("text").startswith(long["text"])


def test_batches_through_the_anthropic_sdk(hearth):
    sdk = anthropic.Anthropic(base_url=hearth.base_url, api_key="x", max_retries=0)
    batch = sdk.messages.batches.create(requests=[{"custom_id": f"q{i}", "params": REQUEST} for i in range(3)])
    deadline = time.monotonic() + 90
    while batch.processing_status != "ended" and time.monotonic() < deadline:
        time.sleep(0.2)
        batch = sdk.messages.batches.retrieve(batch.id)
    assert batch.request_counts.succeeded == 3
    results = list(sdk.messages.batches.results(batch.id))
    assert sorted(r.custom_id for r in results) == ["q0", "q1", "q2"]
    assert all(r.result.type == "succeeded" and r.result.message.content for r in results)


def test_duplicate_requests_attach_to_one_job(hearth, http):
    request = {"model": BABBLER, "max_tokens": 600, "messages": [{"role": "user", "content": "same thing twice"}]}
    before = len(hearth.redis.keys("rq:job:*"))
    answers = []
    threads = [threading.Thread(target=lambda: answers.append(http.post("/v1/messages", json=request).json()))
               for _ in range(2)]
    threads[0].start()
    time.sleep(0.3)
    threads[1].start()
    for thread in threads:
        thread.join(60)
    assert len(answers) == 2 and answers[0]["id"] == answers[1]["id"]
    assert len(hearth.redis.keys("rq:job:*")) == before + 1


def test_rq_info_shows_each_models_queues_and_the_busy_worker(hearth, http):
    [heartbeat] = hearth.redis.keys(worker_heartbeat_key("*"))
    slots = json.loads(hearth.redis.get(heartbeat))["slots"]
    running = [babble(http, priority="interactive") for _ in range(slots)]
    for job_id in running:
        poll_job(http, job_id, until=("started",))
    # Every slot is taken: these two wait in their models' queues.
    waiting = [babble(http, priority="interactive"),
               http.post("/v1/jobs", json={"request": REQUEST, "priority": "background"}).json()["id"]]
    output = subprocess.run([sys.executable, "-m", "rq.cli", "info", "-u", hearth.env["REDIS_URL"]],
                            capture_output=True, text=True, timeout=30).stdout
    lines = {line.split("|")[0].strip(): line.split("|")[1].strip(" █") for line in output.splitlines() if "|" in line}
    babbler_key = model_key(hearth.env["HEARTH_FAST_MODEL"])
    assert lines[f"interactive:{babbler_key}"].startswith(f"1, {slots} executing"), output
    assert lines[f"background:{MAIN_KEY}"].startswith("1,"), output
    assert "busy" in output
    for job_id in [*waiting, *running]:
        http.delete(f"/v1/jobs/{job_id}")
