"""More than one Mac, played by processes on this one: workers by model, affinity, several APIs.

Each test has a Redis of its own, an API, and workers started with their own
HEARTH_WORKER_NAME, models and HEARTH_HOME (so their disk caches are apart, as
on two machines).
"""

import signal
import subprocess
import sys
import threading
import time

import anthropic
import httpx
import pytest
from redis import Redis
from rq.job import Job

from api.live_workers import REFRESH_SECONDS
from hearth.affinity import SHARED_LEVELS
from hearth.contract import affinity_key, worker_heartbeat_key
from hearth.models import model_key
from hearth.settings import BUNDLED_MODEL
from tests.conftest import sse_frames
from tests.integration.conftest import CODER_MODEL, REPO, free_port, stop_process, wait_until

pytestmark = pytest.mark.integration

SYSTEM = "You are Hearth's test agent. Answer in one short sentence, and use the tools when asked. " * 12
TOOLS = [{"name": "Bash", "description": "Run a shell command.",
          "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}}]


class Cluster:
    """A Redis, API processes and named workers, each a real process."""

    def __init__(self, env: dict, tmp_path_factory):
        self.tmp = tmp_path_factory
        port = free_port()
        self.processes = [subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(tmp_path_factory.mktemp("redis"))], stdout=subprocess.DEVNULL)]
        self.redis_url = f"redis://127.0.0.1:{port}/0"
        wait_until(lambda: Redis.from_url(self.redis_url).ping(), 10, "redis-server")
        self.redis = Redis.from_url(self.redis_url)
        self.babbler = env["HEARTH_FAST_MODEL"]  # never ends by itself
        self.env = {key: value for key, value in env.items()
                    if key not in ("HEARTH_FAST_MODEL", "HEARTH_ALIASES", "HEARTH_MODEL")}
        self.env["REDIS_URL"] = self.redis_url
        self.logs = tmp_path_factory.mktemp("logs")
        self.workers = {}
        self.apis = []

    def start_api(self) -> str:
        port = free_port()
        self._start("api", f"api-{port}", HEARTH_PORT=str(port))
        base_url = f"http://127.0.0.1:{port}"
        wait_until(lambda: httpx.get(base_url + "/v1/models").status_code == 200, 60, "hearth api")
        self.apis.append(base_url)
        return base_url

    def start_worker(self, name: str, model: str = BUNDLED_MODEL, home=None, **env):
        self.workers[name] = self._start("worker", name, HEARTH_WORKER_NAME=name, HEARTH_MODEL=model,
                                         HEARTH_HOME=str(home or self.tmp.mktemp(name)), **env)
        wait_until(lambda: self.redis.exists(worker_heartbeat_key(name)), 120, f"worker {name}")
        # Each API reads the live workers every REFRESH_SECONDS; until then it does not know the
        # model, nor (when another worker serves it already) place jobs on this worker.
        for api in self.apis:
            wait_until(lambda api=api: model_key(model) in {m["id"] for m in httpx.get(api + "/v1/models").json()["data"]},
                       10, f"{name}'s model listed")
        if self.apis:
            time.sleep(REFRESH_SECONDS + 0.5)

    def kill_worker(self, name: str):
        """As a crash or a power cut would: no clean shutdown."""
        self.workers[name].send_signal(signal.SIGKILL)
        self.workers[name].wait()

    def _start(self, command: str, log_name: str, **env) -> subprocess.Popen:
        process = subprocess.Popen([sys.executable, "-m", "hearth.cli", command], cwd=REPO,
                                   env=dict(self.env, **env), stdout=open(self.logs / f"{log_name}.log", "ab"),
                                   stderr=subprocess.STDOUT)
        self.processes.append(process)
        return process

    def stop(self):
        for process in reversed(self.processes):
            if process.poll() is None:
                stop_process(process)

    def served_by(self, message_id: str) -> str:
        return Job.fetch(message_id.removeprefix("msg_"), connection=self.redis).worker_name


@pytest.fixture
def cluster(hearth_env, tmp_path_factory):
    made = Cluster(hearth_env, tmp_path_factory)
    yield made
    made.stop()


def sdk(base_url: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=base_url, api_key="unused", max_retries=0, timeout=120)


def test_each_request_goes_to_a_worker_that_has_its_model(cluster):
    api = cluster.start_api()
    cluster.start_worker("mac-a", BUNDLED_MODEL)
    cluster.start_worker("mac-b", CODER_MODEL)
    assert {"hearth-tiny", "hearth-tiny-coder"} <= {model["id"] for model in httpx.get(api + "/v1/models").json()["data"]}

    client = sdk(api)
    replies = {}

    def ask(n: int, model: str):
        message = client.messages.create(model=model, max_tokens=8,
                                         messages=[{"role": "user", "content": f"question {n}"}])
        replies[n] = (model, cluster.served_by(message.id))

    askers = [threading.Thread(target=ask, args=(n, model))
              for n, model in enumerate(["hearth-tiny", "hearth-tiny-coder"] * 4)]
    for asker in askers:
        asker.start()
    for asker in askers:
        asker.join(120)
    assert len(replies) == 8
    assert all(worker == {"hearth-tiny": "mac-a", "hearth-tiny-coder": "mac-b"}[model]
               for model, worker in replies.values()), replies

    response = httpx.post(api + "/v1/messages", json={"model": "qwen3-72b", "max_tokens": 8,
                                                      "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found_error" and "qwen3-72b" in response.json()["error"]["message"]


class Conversation:
    def __init__(self, client: anthropic.Anthropic, topic: str):
        self.client = client
        self.messages = []
        self.topic = topic

    def turn(self, n: int):
        """One more turn, streamed as Claude Code would; the reply's message."""
        self.messages.append({"role": "user", "content": f"{self.topic}, step {n}: what next?"})
        with self.client.messages.stream(model="hearth-tiny", max_tokens=12, system=SYSTEM, tools=TOOLS,
                                         messages=self.messages) as stream:
            message = stream.get_final_message()
        self.messages.append({"role": "assistant", "content": [block.model_dump(exclude_none=True)
                                                               for block in message.content] or "ok"})
        if message.stop_reason == "tool_use":  # answer the call, as an agent would
            self.messages.append({"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": block.id, "content": "done"}
                for block in message.content if block.type == "tool_use"]})
        return message


def test_a_conversation_returns_to_the_worker_holding_its_cache_and_moves_when_it_dies(cluster):
    api = cluster.start_api()
    cluster.start_worker("mac-a")
    cluster.start_worker("mac-b")
    client = sdk(api)
    conversations = [Conversation(client, topic) for topic in ("the parser", "the release notes")]
    first = [conversation.turn(1) for conversation in conversations]
    home = [cluster.served_by(message.id) for message in first]
    for n in (2, 3):
        for conversation, worker in zip(conversations, home):
            message = conversation.turn(n)
            assert cluster.served_by(message.id) == worker, f"turn {n} left {worker}"
            assert message.usage.cache_read_input_tokens > message.usage.input_tokens, "a later turn missed"

    # Its worker dies; its next turn, sent at once (the API may still count the worker alive), is
    # answered by the other: a miss there, then hits again.
    conversation, dead = conversations[0], home[0]
    other = ({"mac-a", "mac-b"} - {dead}).pop()
    cluster.kill_worker(dead)
    moved = conversation.turn(4)
    assert cluster.served_by(moved.id) == other
    again = conversation.turn(5)
    assert cluster.served_by(again.id) == other
    assert again.usage.cache_read_input_tokens > moved.usage.cache_read_input_tokens
    assert again.usage.cache_read_input_tokens > again.usage.input_tokens


def test_a_job_queued_for_a_worker_that_dies_is_answered_by_another(cluster):
    api = cluster.start_api()
    cluster.start_worker("mac-a")
    cluster.start_worker("mac-b")
    client = sdk(api)
    conversation = Conversation(client, "the flaky test")
    home = cluster.served_by(conversation.turn(1).id)
    other = ({"mac-a", "mac-b"} - {home}).pop()
    # Its cache's fingerprints are published just after the stream ends.
    wait_until(lambda: cluster.redis.hlen(affinity_key(home)) > SHARED_LEVELS, 10, "fingerprints published")
    # It dies; for up to HEARTH_HEARTBEAT_TTL its heartbeat outlives it, and the API, seeing it
    # alive, may queue the conversation's next turn for it. Hold the heartbeat so that it does.
    beat = cluster.redis.get(worker_heartbeat_key(home))
    cluster.kill_worker(home)
    cluster.redis.set(worker_heartbeat_key(home), beat, ex=2)
    conversation.messages.append({"role": "user", "content": "the flaky test, step 2: what next?"})
    submitted = httpx.post(api + "/v1/jobs", json={"request": {
        "model": "hearth-tiny", "max_tokens": 8, "system": SYSTEM, "tools": TOOLS,
        "messages": conversation.messages}}).json()["id"]
    assert Job.fetch(submitted, connection=cluster.redis).origin == f"background@{home}"
    deadline = time.monotonic() + 30
    while (view := httpx.get(f"{api}/v1/jobs/{submitted}").json())["status"] not in ("finished", "failed"):
        assert time.monotonic() < deadline, f"the job is still {view['status']}"
        time.sleep(0.1)
    assert view["status"] == "finished"
    assert Job.fetch(submitted, connection=cluster.redis).worker_name == other


def two_apis_and_a_babbling_job(cluster, max_tokens: int) -> tuple[str, str, str]:
    """Two API processes, one worker serving the babbler, and a job submitted through the first."""
    first_api, second_api = cluster.start_api(), cluster.start_api()
    cluster.start_worker("mac-a", cluster.babbler)
    request = {"model": model_key(cluster.babbler), "max_tokens": max_tokens,
               "messages": [{"role": "user", "content": "go on"}]}
    return first_api, second_api, httpx.post(first_api + "/v1/jobs", json={"request": request}).json()["id"]


def test_a_stream_resumed_through_another_api_process_continues_without_a_gap(cluster):
    first_api, second_api, job_id = two_apis_and_a_babbling_job(cluster, max_tokens=200)
    seen = []
    with httpx.stream("GET", f"{first_api}/v1/jobs/{job_id}/events", timeout=60) as response:
        for line in response.iter_lines():
            if line.startswith("id: "):
                seen.append(int(line[4:]))
                if len(seen) == 5:
                    break  # the client's connection drops here
    rest = sse_frames(httpx.get(f"{second_api}/v1/jobs/{job_id}/events", timeout=60,
                                headers={"Last-Event-ID": str(seen[-1])}).text)
    whole = sse_frames(httpx.get(f"{first_api}/v1/jobs/{job_id}/events", timeout=60).text)
    logged = [frame for frame in whole if frame["id"] is not None]  # the log's events, by sequence number
    assert seen + [frame["id"] for frame in rest] == [frame["id"] for frame in logged]
    assert rest[-1]["event"] == "message_stop"
    assert [frame["data"] for frame in rest] == [frame["data"] for frame in logged[len(seen):]]


def test_a_job_cancelled_through_one_api_process_ends_its_stream_on_another(cluster):
    first_api, second_api, job_id = two_apis_and_a_babbling_job(cluster, max_tokens=100_000)
    events = []
    with httpx.stream("GET", f"{first_api}/v1/jobs/{job_id}/events", timeout=30) as response:
        for line in response.iter_lines():
            if line.startswith("event: "):
                events.append(line[7:])
                if events.count("content_block_delta") == 3:
                    assert httpx.delete(f"{second_api}/v1/jobs/{job_id}").status_code in (200, 202)
    assert events[-1] in ("message_stop", "error")  # the stream ended, through the API that never saw the cancel
    assert httpx.get(f"{second_api}/v1/jobs/{job_id}").json()["status"] == "cancelled"


def test_a_worker_killed_without_warning_comes_back_with_its_cache(cluster, tmp_path):
    api = cluster.start_api()
    cluster.start_worker("mac-a", home=tmp_path)
    request = {"model": "hearth-tiny", "max_tokens": 4, "system": SYSTEM,
               "messages": [{"role": "user", "content": "remember this"}]}
    cold = httpx.post(api + "/v1/messages", json=request, timeout=60).json()["usage"]
    wait_until(lambda: len(list((tmp_path / "prompt-cache").rglob("*.npz"))) * 128 >= cold["input_tokens"] - 128,
               10, "the blocks on disk")
    cluster.kill_worker("mac-a")  # no shutdown: nothing is saved now
    cluster.start_worker("mac-a", home=tmp_path)
    warm = httpx.post(api + "/v1/messages", json=dict(request, messages=[{"role": "user", "content": "and this"}]),
                      timeout=60).json()["usage"]
    assert cold["cache_read_input_tokens"] == 0
    assert warm["cache_read_input_tokens"] >= 256, warm  # the system prompt's blocks, from disk
