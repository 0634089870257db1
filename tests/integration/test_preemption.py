"""Interactive turns preempt background jobs on the real worker: greedy output unchanged, no event lost.

This Hearth has two slots: a filler background job holds one, the job under
test the other, so every interactive turn needs a background job's slot and
the newest one (the job under test) steps aside.
"""

import subprocess
import sys
import threading
import time

import anthropic
import pytest

from tests.conftest import poll_job, sse_frames

pytestmark = pytest.mark.integration

BABBLER = "claude-haiku-4-5"  # random weights that never end by themselves
LONG = {"model": BABBLER, "max_tokens": 800, "temperature": 0, "messages": [{"role": "user", "content": "go on"}]}
SHORT = {"model": "claude-opus-4-6", "max_tokens": 8, "messages": [{"role": "user", "content": "hello"}]}


@pytest.fixture(scope="module")
def hearth(private_hearth):
    return private_hearth(HEARTH_MAX_BATCH="2")


@pytest.fixture
def filler(http):
    """A background job holding one of the two slots until the test ends."""
    job_id = http.post("/v1/jobs", json={"request": dict(LONG, max_tokens=100_000, messages=[
        {"role": "user", "content": "fill a slot"}])}).json()["id"]
    poll_job(http, job_id, until=("started",), timeout=60)
    yield job_id
    http.delete(f"/v1/jobs/{job_id}")


def background_content(http, request) -> list:
    job_id = http.post("/v1/jobs", json={"request": request}).json()["id"]
    view = poll_job(http, job_id, timeout=120)
    assert view["status"] == "finished", view
    return view["message"]["content"]


def rq_info(hearth) -> str:
    return subprocess.run([sys.executable, "-m", "rq.cli", "info", "-u", hearth.env["REDIS_URL"]],
                          capture_output=True, text=True, timeout=30).stdout


def test_interactive_requests_preempt_a_background_job_without_changing_it(hearth, http, filler):
    reference = background_content(http, LONG)
    assert len(set(reference[0]["text"].split())) > 100  # varied text: a dropped or doubled token would show

    job_id = http.post("/v1/jobs", json={"request": LONG}).json()["id"]
    frames = []
    watcher = threading.Thread(target=lambda: frames.extend(sse_frames(http.get(f"/v1/jobs/{job_id}/events").text)))
    watcher.start()
    sdk = anthropic.Anthropic(base_url=hearth.base_url, api_key="x", max_retries=0)
    seen_suspended, infos = [], []
    while http.get(f"/v1/jobs/{job_id}").json()["status"] != "finished":
        time.sleep(0.2)
        with sdk.messages.stream(**SHORT) as stream:
            for _ in stream.text_stream:
                pass
            # Mid-turn, the background job waits at the front of its queue, not running.
            view = http.get(f"/v1/jobs/{job_id}").json()
            seen_suspended.append(view["status"])
            infos.append(rq_info(hearth))
        assert stream.get_final_message().stop_reason in ("end_turn", "max_tokens")
    view = poll_job(http, job_id, timeout=120)
    watcher.join(60)

    assert view["status"] == "finished" and view["suspensions"] >= 1
    assert "suspended" in seen_suspended
    assert view["message"]["content"] == reference  # greedy: identical to the uninterrupted run
    # Event 1 (`started`) is folded into message_start; message_end gives two frames of one id.
    ids = [f["id"] for f in frames if f["id"] is not None and f["event"] != "message_stop"]
    assert ids == list(range(2, len(ids) + 2)), "gap or duplicate across a suspension"
    assert frames[-1]["event"] == "message_stop"
    for info in infos:
        # Never lost, never running twice: queued (suspended) or started, once.
        assert info.count(job_id) <= 1, info


def test_cancelling_a_suspended_job_ends_its_stream(hearth, http, filler):
    job_id = http.post("/v1/jobs", json={"request": dict(LONG, max_tokens=100_000)}).json()["id"]
    poll_job(http, job_id, until=("started",), timeout=60)
    blocker = http.post("/v1/jobs", json={"request": dict(LONG, max_tokens=100_000, temperature=1),
                                          "priority": "interactive"}).json()["id"]
    poll_job(http, job_id, until=("suspended",), timeout=30)
    assert http.delete(f"/v1/jobs/{job_id}").json()["status"] == "cancelled"
    frames = sse_frames(http.get(f"/v1/jobs/{job_id}/events").text)
    assert frames[-1]["event"] == "error" and frames[-1]["data"]["error"]["type"] == "cancelled"
    http.delete(f"/v1/jobs/{blocker}")
    poll_job(http, blocker)
    time.sleep(1)
    assert http.get(f"/v1/jobs/{job_id}").json()["status"] == "cancelled", "a cancelled suspended job resumed"


def test_three_background_jobs_and_interactive_ones_all_finish(hearth, http):
    backgrounds = [http.post("/v1/jobs", json={"request": dict(LONG, max_tokens=120, messages=[
        {"role": "user", "content": f"task {n}"}])}).json()["id"] for n in range(3)]
    poll_job(http, backgrounds[0], until=("started",), timeout=60)
    interactive = []
    for n in range(4):
        interactive.append(http.post("/v1/jobs", json={"request": dict(SHORT, messages=[
            {"role": "user", "content": f"question {n}"}]), "priority": "interactive"}).json()["id"])
        time.sleep(0.4)
    for job_id in backgrounds + interactive:
        assert poll_job(http, job_id, timeout=180)["status"] == "finished", job_id
