"""Shared fixtures: fakeredis, a scripted engine, and a real HearthWorker that runs in bursts."""

import json
import threading
import time

import fakeredis
import pytest
from rq.timeouts import TimerDeathPenalty
from starlette.testclient import TestClient

from api.app import create_app
from api.job_queue import JobQueue
from hearth.contract import QUEUES, Event, events_key
from hearth.settings import Settings
from workers import runtime
from workers.engine import RenderedPrompt, Step
from workers.worker import HearthWorker

MODEL = "test-model"


class ScriptedEngine:
    """Stands in for a loaded model: 'generates' the given text pieces, one per token.

    `on_step(index)` runs before each piece is yielded: tests use it to cancel
    or stop a job mid-generation. `fail_at` raises there instead.
    """

    def __init__(self, pieces, opens_in_thinking=False, on_step=None, fail_at=None, delay=0.0, then=None):
        self.pieces = list(pieces)
        # Pieces for later generate() calls (a continuation after a forced end of thinking).
        self.then = list(then or [])
        self.opens_in_thinking = opens_in_thinking
        self.on_step = on_step
        self.fail_at = fail_at
        self.delay = delay
        self.generated = 0
        self.renders = 0
        self.contexts = []  # every context generation started from
        self.tool_format = "json"
        self.context_window = None
        self.prompt_length = 0
        self.prompt_cache = FakePromptCache()

    def render(self, request):
        self.renders += 1
        tokens = list(range(sum(len(str(m.get("content", ""))) for m in request.messages) // 4 + 3))
        self.prompt_length = len(tokens)
        return RenderedPrompt(tokens=tokens, opens_in_thinking=self.opens_in_thinking)

    def encode(self, text):
        return [ord(c) for c in text]

    def decoder(self, state=None):
        return FakeDecoder()

    def generate(self, prompt_tokens, request, on_prefill_progress=None, static_tokens=0, decoder=None,
                 on_cache_lookup=None):
        self.contexts.append(list(prompt_tokens))
        if on_cache_lookup:
            on_cache_lookup(0)
        if on_prefill_progress:
            on_prefill_progress(0, len(prompt_tokens))
        if self.then and len(self.contexts) > 1:
            pieces, start = self.then, 0
        else:
            # A resumed job's context already holds the pieces it generated: go on from there.
            pieces, start = self.pieces, len(prompt_tokens) - self.prompt_length
        for i in range(start, len(pieces)):
            if self.on_step:
                self.on_step(i)
            if i == self.fail_at:
                raise MemoryError("simulated out-of-memory")
            time.sleep(self.delay)
            self.generated += 1
            if i - start + 1 == request.max_tokens:
                yield Step(pieces[i], i, "length")
                return
            yield Step(pieces[i], i, "stop" if i == len(pieces) - 1 else None)


class FakeDecoder:
    """ScriptedEngine's steps carry their text already."""

    def state(self):
        return {}


class FakePromptCache:
    """Records what a suspended job keeps pinned."""

    def __init__(self):
        self.held = []

    def hold(self, tokens):
        self.held.append(list(tokens))
        return [len(self.held) - 1]

    def unhold(self, blocks):
        for index in blocks:
            self.held[index] = None

    def stats(self):
        return {"pinned_for_suspended_jobs": sum(tokens is not None for tokens in self.held)}


class BurstWorker(HearthWorker):
    """A HearthWorker that can run off the main thread (no signal handlers, no SIGALRM)."""

    death_penalty_class = TimerDeathPenalty

    def _install_signal_handlers(self):
        pass


@pytest.fixture
def fake_server():
    return fakeredis.FakeServer()


@pytest.fixture
def redis(fake_server):
    return fakeredis.FakeRedis(server=fake_server)


@pytest.fixture
def settings():
    return Settings(redis_url="redis://fake", model=MODEL, ping_interval=0.2, heartbeat_ttl=5)


@pytest.fixture
def jobs(redis, settings):
    return JobQueue(redis, settings)


@pytest.fixture
def make_worker(redis, settings):
    """make_worker(engine) -> a worker whose runtime serves `engine` as MODEL."""
    made = []

    def make(engine):
        rt = runtime.Runtime(settings=settings, engines={MODEL: engine})
        runtime.install(rt)
        worker = BurstWorker(list(QUEUES), connection=redis, runtime=rt)
        made.append(worker)
        return worker

    yield make
    runtime.install(None)


@pytest.fixture
def app(fake_server, settings):
    def clients(_settings):
        return fakeredis.FakeRedis(server=fake_server), fakeredis.FakeAsyncRedis(server=fake_server)

    return create_app(settings, clients=clients)


@pytest.fixture
def client(app):
    # Redirects are not followed: a real client would not follow them either.
    with TestClient(app, follow_redirects=False) as test_client:
        yield test_client


@pytest.fixture
def running_worker(make_worker):
    """start(engine): a worker thread that drains the queues until the test ends."""
    stop = threading.Event()
    threads = []

    def start(engine):
        worker = make_worker(engine)

        def drain():
            while not stop.is_set():
                worker.work(burst=True)
                stop.wait(0.02)

        thread = threading.Thread(target=drain, daemon=True)
        thread.start()
        threads.append(thread)
        return worker

    yield start
    stop.set()
    for thread in threads:
        thread.join(5)


def sse_events(text):
    events = []
    for chunk in text.replace("\r\n", "\n").split("\n\n"):
        lines = dict(line.split(": ", 1) for line in chunk.splitlines() if ": " in line and not line.startswith(":"))
        if "event" in lines:
            events.append((lines["event"], json.loads(lines["data"])))
    return events


def poll_job(client, job_id, until=("finished", "failed", "cancelled"), timeout=30.0):
    """GET /v1/jobs/{id} until its status is one of `until` (any httpx-style client)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view = client.get(f"/v1/jobs/{job_id}").json()
        if view["status"] in until:
            return view
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} still {view['status']} after {timeout}s")


def sse_frames(text):
    """SSE frames as dicts (id as int or None), pings left out."""
    frames = []
    for chunk in text.replace("\r\n", "\n").split("\n\n"):
        fields = dict(line.split(": ", 1) for line in chunk.splitlines() if ": " in line and not line.startswith(":"))
        if "event" in fields and fields["event"] != "ping":
            frames.append({"id": int(fields["id"]) if "id" in fields else None, "event": fields["event"],
                           "data": json.loads(fields["data"])})
    return frames


def read_log(redis, job_id) -> list[Event]:
    return [Event.from_json(fields[b"e"]) for _, fields in redis.xrange(events_key(job_id))]
