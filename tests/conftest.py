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
from hearth.contract import Event, events_key
from hearth.settings import Settings
from workers import runtime
from workers.batch import Output
from workers.engine import RenderedPrompt
from workers.worker import HearthWorker

MODEL = "test-model"


class ScriptedEngine:
    """Stands in for a loaded model: every sequence 'generates' the given text pieces, one per token,
    then its end token.

    Piece i is token FIRST_TOKEN + i; a continuation after a forced end of
    thinking generates `then`. A resumed sequence goes on after the pieces
    its context already holds (with `then`, once it holds them all). `on_step(key, index)` runs before sequence
    `key` makes piece `index` (tests cancel, stop or enqueue work there);
    `fail_at` makes the batched step raise there instead, as an MLX failure
    would. `bytes_per_token` gives sequences a K/V size for admission.
    """

    FIRST_TOKEN = 1_000_000
    END_TOKEN = 999_999

    def __init__(self, pieces, opens_in_thinking=False, on_step=None, fail_at=None, delay=0.0, then=None,
                 bytes_per_token=0):
        self.pieces = list(pieces)
        self.then = list(then or [])
        self.opens_in_thinking = opens_in_thinking
        self.on_step = on_step
        self.fail_at = fail_at
        self.delay = delay
        self.bytes_per_token = bytes_per_token
        self.name = MODEL
        self.generated = 0
        self.renders = 0
        self.contexts = []  # every context a sequence started (or continued) from
        self.steps = []  # the keys of the sequences each batched step decoded
        self.tool_format = "json"
        self.context_window = None
        self.max_new_tokens = None
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
        return ScriptedDecoder(self.pieces + self.then)

    def tool_guide(self, request, in_thinking):
        return None  # scripted pieces are what they are

    def batch(self, max_sequences, prefill_chunk):
        return ScriptedBatch(self)


class ScriptedDecoder:
    def __init__(self, vocabulary):
        self.vocabulary = vocabulary

    def add(self, token):
        return self.vocabulary[token - ScriptedEngine.FIRST_TOKEN]

    def flush(self):
        return ""

    def state(self):
        return {}


class ScriptedBatch:
    """ScriptedEngine's sequences, stepped together: a prefill step first, then a piece per step."""

    def __init__(self, engine):
        self.engine = engine
        self.prompt_cache = engine.prompt_cache
        self.sequences = {}

    def __len__(self):
        return len(self.sequences)

    def __contains__(self, key):
        return key in self.sequences

    def add(self, key, tokens, sampling, max_tokens, static_tokens=0, guide=None):
        self.engine.contexts.append(list(tokens))
        done = sum(t >= ScriptedEngine.FIRST_TOKEN for t in tokens)  # a resumed job's pieces so far
        # A context holding every piece (its end taken back) goes on with `then`.
        last = len(self.engine.pieces) + (len(self.engine.then) if done >= len(self.engine.pieces) else 0)
        self.sequences[key] = {"next": done, "last": last, "room": max_tokens,
                               "prefilled": False, "context": list(tokens)}

    def extend(self, key, tokens, max_tokens):
        sequence = self.sequences[key]
        sequence["context"] += tokens
        self.engine.contexts.append(list(sequence["context"]))
        first = len(self.engine.pieces)
        sequence.update(next=first, last=first + len(self.engine.then), room=max_tokens, prefilled=False)

    def remove(self, key):
        del self.sequences[key]

    def step(self):
        outputs = []
        self.engine.steps.append(list(self.sequences))
        for key, sequence in list(self.sequences.items()):
            if not sequence["prefilled"]:
                sequence["prefilled"] = True
                length = len(sequence["context"])
                outputs.append(Output(key, prefilled=(length, length), reused=0))
                continue
            index = sequence["next"]
            if self.engine.on_step:
                self.engine.on_step(key, index)
            if index == self.engine.fail_at:
                raise MemoryError("simulated out-of-memory")
            time.sleep(self.engine.delay)
            self.engine.generated += 1
            sequence["next"] += 1
            sequence["room"] -= 1
            # Past its last piece, a sequence says its end token.
            token = ScriptedEngine.END_TOKEN if index == sequence["last"] else ScriptedEngine.FIRST_TOKEN + index
            finish = "stop" if token == ScriptedEngine.END_TOKEN else "length" if sequence["room"] == 0 else None
            outputs.append(Output(key, token=token, finish=finish))
            sequence["context"].append(token)
            if finish:
                del self.sequences[key]
        return outputs

    @property
    def nbytes(self):
        return self.engine.bytes_per_token * len(self) * self._longest()

    def nbytes_with(self, tokens):
        return self.engine.bytes_per_token * (len(self) + 1) * max(self._longest(), tokens)

    def _longest(self):
        return max((len(s["context"]) for s in self.sequences.values()), default=0)


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

    def cached_blocks(self, tokens):
        return []  # no blocks: nothing to route by


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
        worker = BurstWorker(redis, rt, f"worker-{len(made) + 1}")
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
