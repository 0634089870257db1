"""Non-streamed requests through gunicorn wait for their answer however long it takes, and no longer.

The API's ping interval here is 0.5 s: a prefill or a queue longer than that
is many quiet ticks, each of which once asked `is_disconnected()`, which on
gunicorn's ASGI worker took the waiting client for a gone one (a 499).
"""

import random
import threading
import time

import anthropic
import httpx
import openai
import pytest
from rq.job import Job, JobStatus

from hearth.contract import QUEUE_INTERACTIVE
from tests.integration.conftest import started_job_ids

pytestmark = pytest.mark.integration

MAIN = "claude-opus-4-6"
BABBLER = "claude-haiku-4-5"  # never ends by itself
WORDS = ["module", "request", "token", "cache", "stream", "worker", "queue", "prompt", "model", "answer", "file",
         "test", "build", "parse"]


def long_prompt(words: int) -> str:
    # Fresh words each time, so the prompt cache cannot shorten the prefill.
    rng = random.Random(time.time_ns())
    return " ".join(rng.choice(WORDS) for _ in range(words))


@pytest.fixture
def sdk(hearth):
    return anthropic.Anthropic(base_url=hearth.base_url, api_key="unused", max_retries=0, timeout=300)


@pytest.fixture
def openai_sdk(hearth):
    return openai.OpenAI(base_url=hearth.base_url + "/v1", api_key="unused", max_retries=0, timeout=300)


def test_a_prefill_longer_than_the_ping_interval_gets_its_answer(sdk, openai_sdk):
    started = time.monotonic()
    message = sdk.messages.create(model=MAIN, max_tokens=20,
                                  messages=[{"role": "user", "content": long_prompt(2500)}])
    assert time.monotonic() - started > 1.0, "the prefill was too short to test anything"
    assert message.usage.input_tokens > 2000 and message.content

    completion = openai_sdk.chat.completions.create(model=MAIN, max_tokens=20,
                                                    messages=[{"role": "user", "content": long_prompt(2500)}])
    assert completion.usage.prompt_tokens > 2000 and completion.choices[0].finish_reason


def test_a_request_queued_behind_a_long_job_gets_its_answer(hearth, sdk, openai_sdk):
    ahead = threading.Thread(target=lambda: sdk.messages.create(
        model=BABBLER, max_tokens=700, messages=[{"role": "user", "content": "go"}]))
    ahead.start()
    started = time.monotonic()
    try:
        deadline = time.monotonic() + 30
        while not started_job_ids(hearth.redis, QUEUE_INTERACTIVE):
            assert time.monotonic() < deadline, "the long job never started"
            time.sleep(0.02)
        # Greedy: a sampled answer from the tiny model may end after its thinking, with no text.
        message = sdk.messages.create(model=MAIN, max_tokens=20, extra_body={"temperature": 0},
                                      messages=[{"role": "user", "content": "hello"}])
        completion = openai_sdk.chat.completions.create(model=MAIN, max_tokens=20, temperature=0,
                                                        messages=[{"role": "user", "content": "hello"}])
    finally:
        ahead.join(120)
    assert message.content and completion.choices[0].message.content is not None
    assert time.monotonic() - started > 1.0, "nothing waited: the long job was too short"


@pytest.mark.parametrize("path", ["/v1/messages", "/v1/chat/completions"])
def test_a_client_that_closes_its_connection_mid_wait_has_its_job_cancelled(hearth, path):
    already = started_job_ids(hearth.redis, QUEUE_INTERACTIVE)
    request = {"model": BABBLER, "max_tokens": 100_000, "messages": [{"role": "user", "content": "go"}]}
    running = []
    with pytest.raises(httpx.ReadTimeout):
        # Gives up after 2 s of silence, closing its connection, as an impatient client would.
        with httpx.Client(base_url=hearth.base_url, timeout=httpx.Timeout(2.0)) as client:
            watcher = threading.Thread(target=lambda: running.extend(_first_started(hearth.redis, already)))
            watcher.start()
            try:
                client.post(path, json=request)
            finally:
                watcher.join(10)
    left = time.monotonic()
    [job_id] = running
    job = Job.fetch(job_id, connection=hearth.redis)
    while job.get_status() != JobStatus.STOPPED and time.monotonic() - left < 5:
        time.sleep(0.02)
    assert job.get_status() == JobStatus.STOPPED
    assert time.monotonic() - left < 2.0, "the job ran on after its client had gone"


def _first_started(redis, already: set, timeout: float = 10) -> list:
    """The first interactive job to start that had not started before."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ids = started_job_ids(redis, QUEUE_INTERACTIVE) - already
        if ids:
            return sorted(ids)[:1]
        time.sleep(0.02)
    return []
