"""The spine with real processes, driven by the official anthropic SDK and rq's own tools."""

import subprocess
import sys
import threading
import time

import anthropic
import httpx
import pytest
from rq.command import send_stop_job_command
from rq.job import Job, JobStatus

pytestmark = pytest.mark.integration

MAIN = "claude-opus-4-6"  # the bundled, trained tiny model
BABBLER = "claude-haiku-4-5"  # the untrained fast model: never stops by itself


@pytest.fixture
def sdk(hearth):
    return anthropic.Anthropic(base_url=hearth.base_url, api_key="unused", max_retries=0, timeout=120)


def job_id_of(message_id: str) -> str:
    return message_id.removeprefix("msg_")


def wait_for_status(redis, job_id, statuses, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = Job.fetch(job_id, connection=redis).get_status()
        if status in statuses:
            return status
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} still {status} after {timeout}s")


def test_stream_yields_text_and_final_message_with_usage(sdk):
    with sdk.messages.stream(model=MAIN, max_tokens=200, extra_body={"temperature": 0},
                             messages=[{"role": "user", "content": "hello"}]) as stream:
        text = "".join(stream.text_stream)
        message = stream.get_final_message()
    assert text.strip(), "the model streamed no text"
    assert message.content[-1].type == "text" and message.content[-1].text == text
    assert message.stop_reason in ("end_turn", "max_tokens")
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    assert message.model == MAIN


def test_non_streamed_call_returns_the_same_shape(sdk):
    message = sdk.messages.create(model=MAIN, max_tokens=200, extra_body={"temperature": 0},
                             messages=[{"role": "user", "content": "hello"}])
    assert message.type == "message" and message.role == "assistant" and message.id.startswith("msg_")
    assert message.content and message.content[-1].type == "text" and message.content[-1].text.strip()
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0


def test_disconnect_cancels_the_job_and_the_next_one_starts_within_a_second(hearth, sdk):
    with sdk.messages.stream(model=BABBLER, max_tokens=100_000,
                             messages=[{"role": "user", "content": "talk forever"}]) as stream:
        deltas = 0
        for event in stream:
            if event.type == "message_start":
                babbling_job = job_id_of(event.message.id)
            if event.type == "content_block_delta":
                deltas += 1
                if deltas == 5:
                    break
    disconnected = time.time()  # leaving the block closed the connection
    message = sdk.messages.create(model=MAIN, max_tokens=50, messages=[{"role": "user", "content": "hello"}])

    assert wait_for_status(hearth.redis, babbling_job, {JobStatus.STOPPED}) == JobStatus.STOPPED
    next_job = Job.fetch(job_id_of(message.id), connection=hearth.redis)
    started = next_job.started_at.timestamp()
    assert started - disconnected < 1.0, f"next job started {started - disconnected:.2f}s after the disconnect"


def test_rq_send_stop_job_command_stops_a_running_generation(hearth, sdk):
    seen = {}

    def consume():
        try:
            with sdk.messages.stream(model=BABBLER, max_tokens=100_000,
                                     messages=[{"role": "user", "content": "go on"}]) as stream:
                for event in stream:
                    if event.type == "message_start":
                        seen["job"] = job_id_of(event.message.id)
        except anthropic.APIStatusError as exc:
            seen["error"] = exc

    reader = threading.Thread(target=consume)
    reader.start()
    wait_for_status_started = time.monotonic() + 30
    while "job" not in seen and time.monotonic() < wait_for_status_started:
        time.sleep(0.05)
    wait_for_status(hearth.redis, seen["job"], {JobStatus.STARTED})
    send_stop_job_command(hearth.redis, seen["job"])
    reader.join(30)
    assert not reader.is_alive(), "the stream did not end after the stop command"
    assert "cancelled" in str(seen.get("error")), "the stream did not end with an error event"
    assert wait_for_status(hearth.redis, seen["job"], {JobStatus.STOPPED}) == JobStatus.STOPPED
    # The worker is still there, model loaded.
    assert sdk.messages.create(model=MAIN, max_tokens=20, messages=[{"role": "user", "content": "hi"}]).content


def test_rq_info_shows_both_queues_and_the_worker(hearth):
    output = subprocess.run([sys.executable, "-m", "rq.cli", "info", "-u", hearth.env["REDIS_URL"]],
                            capture_output=True, text=True, timeout=30).stdout
    assert "interactive" in output and "background" in output
    worker_name = hearth.redis.keys("hearth:worker:*")[0].decode().rsplit(":", 1)[1]
    assert worker_name in output and "idle" in output


def test_an_idle_worker_keeps_its_blocking_dequeue(hearth):
    # A connection pooled before rq set its socket timeout kept redis-py's 5 s default:
    # every idle dequeue then timed out, and rq backed off for seconds before the next one.
    time.sleep(7)
    assert "could not connect to Redis" not in (hearth.logs / "worker.log").read_text()


def test_healthz_reports_redis_and_worker(hearth):
    health = httpx.get(hearth.base_url + "/healthz").json()
    assert health["status"] == "ok" and health["redis"] is True and len(health["workers"]) == 1


def test_models_lists_the_served_models(hearth):
    models = httpx.get(hearth.base_url + "/v1/models").json()["data"]
    # the bundled model, the fast (babbler) model, the coder variant and its alias
    assert len(models) == 4


def test_a_follow_up_turn_reads_the_first_turn_from_the_prompt_cache(hearth, sdk):
    system = "You are a helpful coding assistant. " * 40  # a prefix worth caching
    history = [{"role": "user", "content": "What is a closure?"}]
    first = sdk.messages.create(model=MAIN, max_tokens=60, system=system, messages=history)
    first_prompt = first.usage.input_tokens + (first.usage.cache_read_input_tokens or 0)
    history += [{"role": "assistant", "content": [b.model_dump() for b in first.content]},
                {"role": "user", "content": "And a decorator?"}]
    second = sdk.messages.create(model=MAIN, max_tokens=60, system=system, messages=history)
    assert second.usage.cache_read_input_tokens >= first_prompt - 8
    # Anthropic's accounting: input_tokens counts only what was prefilled.
    assert second.usage.input_tokens < first_prompt / 2
    stats = httpx.get(hearth.base_url + "/v1/cache").json()["workers"]
    counters = next(iter(stats.values()))
    assert sum(m["reused_tokens"] for m in counters.values()) >= second.usage.cache_read_input_tokens


def test_count_tokens_matches_what_generation_processes(sdk):
    request = {"model": MAIN, "system": "You count tokens carefully.",
               "messages": [{"role": "user", "content": "How many tokens is this sentence, exactly?"}]}
    counted = sdk.messages.count_tokens(**request).input_tokens
    message = sdk.messages.create(max_tokens=20, **request)
    assert counted == message.usage.input_tokens + message.usage.cache_read_input_tokens
