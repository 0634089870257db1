"""Many jobs at once on the real worker: decoded together, each exactly as alone, none lost or left waiting."""

import threading
import time

import anthropic
import httpx
import pytest

from hearth.contract import QUEUE_BACKGROUND, QUEUE_INTERACTIVE
from tests.conftest import poll_job
from tests.integration.conftest import started_job_ids

pytestmark = pytest.mark.integration

MAIN = "claude-opus-4-6"
BABBLER = "claude-haiku-4-5"  # never ends by itself
GREEDY = {"temperature": 0}


@pytest.fixture
def sdk(hearth):
    return anthropic.Anthropic(base_url=hearth.base_url, api_key="x", max_retries=0, timeout=120)


def babble(sdk, prompt: str, tokens: int) -> str:
    with sdk.messages.stream(model=BABBLER, max_tokens=tokens, extra_body=GREEDY,
                             messages=[{"role": "user", "content": prompt}]) as stream:
        return "".join(stream.text_stream)


def test_concurrent_streams_decode_together_and_each_gets_what_it_would_alone(hearth, sdk):
    prompts = [f"stream {n}: tell me about {topic}" for n, topic in enumerate(["tides", "bread", "owls", "maps"])]
    alone = babble(sdk, prompts[0], 120)
    texts, started = {}, []

    def watch():
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(texts) < len(prompts):
            started.append(len(started_job_ids(hearth.redis, QUEUE_INTERACTIVE)))
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    readers = [threading.Thread(target=lambda p=p: texts.__setitem__(p, babble(sdk, p, 120))) for p in prompts]
    watcher.start()
    for reader in readers:
        reader.start()
    for thread in readers + [watcher]:
        thread.join(60)
    assert max(started) == len(prompts), "rq never showed the four jobs started at once"
    assert texts[prompts[0]] == alone, "greedy output changed in a batch"
    assert len(set(texts.values())) == len(prompts)


def test_interactive_background_and_haiku_jobs_together_none_lost_none_waiting(hearth, sdk):
    with httpx.Client(base_url=hearth.base_url, timeout=60) as http:
        background = [http.post("/v1/jobs", json={"priority": QUEUE_BACKGROUND, "request": {
            "model": BABBLER, "max_tokens": 600, "messages": [{"role": "user", "content": f"work {n}"}]}}).json()["id"]
            for n in range(2)]
        turns = [http.post("/v1/jobs", json={"priority": QUEUE_INTERACTIVE, "request": {
            "model": MAIN, "max_tokens": 60, "messages": [{"role": "user", "content": f"question {n}"}]}}).json()["id"]
            for n in range(2)]
        side_call = http.post("/v1/jobs", json={"priority": QUEUE_INTERACTIVE, "request": {
            "model": BABBLER, "max_tokens": 8, "messages": [{"role": "user", "content": "a title"}]}}).json()["id"]
        views = {job_id: poll_job(http, job_id, timeout=120) for job_id in background + turns + [side_call]}
    assert all(view["status"] == "finished" for view in views.values()), views
    # Nobody waited for a whole other job: the short ones ended while the long ones still ran.
    for short in turns + [side_call]:
        assert views[short]["ended_at"] < min(views[job]["ended_at"] for job in background)
        assert views[short]["started_at"] < min(views[job]["ended_at"] for job in background)
