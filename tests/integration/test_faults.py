"""Fault injection against a real Redis, the real worker process and the real API.

Each test injects one fault and checks that no client hangs and no job is
lost. These tests own their Hearth (its own redis-server with an append-only
file, so it can be restarted): they kill and restart its processes.
"""

import json
import signal
import socket
import subprocess
import threading
import time

import httpx
import pytest
from redis import Redis

from hearth.contract import FAULT_KEY, QUEUE_BACKGROUND, model_queue
from tests.conftest import poll_job, sse_frames
from tests.integration.conftest import MAIN_KEY, Hearth, free_port, wait_until

pytestmark = pytest.mark.integration

BABBLER = "claude-haiku-4-5"  # never ends by itself
SHORT = {"model": "claude-opus-4-6", "max_tokens": 20, "messages": [{"role": "user", "content": "hello"}]}
SEND_TIMEOUT = 3
SLOTS = 4


def babble(max_tokens=100_000, **extra) -> dict:
    return {"model": BABBLER, "max_tokens": max_tokens, "messages": [{"role": "user", "content": "go"}], **extra}


class RestartableRedis:
    def __init__(self, port: int, data_dir):
        self.port, self.data_dir, self.process = port, data_dir, None
        self.url = f"redis://127.0.0.1:{port}/0"

    def start(self):
        self.process = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                                         "--dir", str(self.data_dir), "--appendonly", "yes", "--save", ""],
                                        stdout=subprocess.DEVNULL)
        wait_until(lambda: Redis.from_url(self.url).ping(), 10, "redis-server")

    def stop(self):
        self.process.send_signal(signal.SIGTERM)  # redis-server writes its append-only file and exits
        self.process.wait(10)


@pytest.fixture(scope="module")
def faulty(hearth_env, tmp_path_factory):
    """A Hearth of its own, with fault injection on and a short send timeout."""
    redis = RestartableRedis(free_port(), tmp_path_factory.mktemp("faulty-redis"))
    redis.start()
    env = dict(hearth_env, REDIS_URL=redis.url, HEARTH_PORT=str(free_port()), HEARTH_FAULT_INJECTION="1",
               HEARTH_MAX_BATCH=str(SLOTS), HEARTH_SEND_TIMEOUT=str(SEND_TIMEOUT), HEARTH_SEND_BUFFER_BYTES="16384", HEARTH_HOME=str(tmp_path_factory.mktemp("faulty-home")))
    running = Hearth(env, tmp_path_factory.mktemp("faulty-logs"))
    running.redis_server = redis
    running.start_api()
    running.start_worker()
    yield running
    running.stop()
    redis.stop()


@pytest.fixture
def http(faulty):
    with httpx.Client(base_url=faulty.base_url, timeout=60) as client:
        yield client


def worker_alive(faulty) -> bool:
    return faulty.worker is not None and faulty.worker.poll() is None


def ensure_worker(faulty):
    if not worker_alive(faulty):
        faulty.start_worker()


def submit(http, request, priority=QUEUE_BACKGROUND) -> str:
    response = http.post("/v1/jobs", json={"request": request, "priority": priority})
    assert response.status_code == 202, response.text
    return response.json()["id"]


def stream_until_end(response, on_frame=None) -> list:
    """Read an SSE response to its end; every frame as a dict."""
    frames, chunk = [], []
    for line in response.iter_lines():
        if line:
            chunk.append(line)
            continue
        for frame in sse_frames("\n".join(chunk) + "\n\n"):
            frames.append(frame)
            if on_frame:
                on_frame(frame)
        chunk = []
    return frames


def test_sigkill_with_a_full_batch_fails_every_job_in_it_and_loses_no_queued_one(faulty, http):
    ensure_worker(faulty)
    # Four streams fill the worker's four slots (each read as it comes); two more jobs wait in the queue.
    streams = [[] for _ in range(SLOTS)]

    def read(frames, n):
        with httpx.Client(base_url=faulty.base_url, timeout=60) as client:
            with client.stream("POST", "/v1/messages", json=babble(stream=True, messages=[
                    {"role": "user", "content": f"stream {n}"}])) as response:
                stream_until_end(response, frames.append)

    readers = [threading.Thread(target=read, args=(frames, n)) for n, frames in enumerate(streams)]
    for reader in readers:
        reader.start()
    wait_until(lambda: all(any(f["event"] == "content_block_delta" for f in frames) for frames in streams),
               30, "four streams decoding")
    batch = [frames[0]["data"]["message"]["id"].removeprefix("msg_") for frames in streams]
    queued = [submit(http, SHORT) for _ in range(2)]
    time.sleep(0.5)
    assert [http.get(f"/v1/jobs/{job_id}").json()["status"] for job_id in queued] == ["queued", "queued"]
    faulty.worker.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    for reader in readers:
        reader.join(30)
    noticed = time.monotonic() - killed_at
    endings = [frames[-1] for frames in streams]
    assert noticed < 10 and all(frame["event"] == "error" for frame in endings), (noticed, endings)
    for job_id in batch:
        view = poll_job(http, job_id, until=("failed",), timeout=10)
        assert "died" in view["error"]["message"]
    # A job dequeued by the dead worker but never started (the window rq leaves open) is not lost either.
    assert faulty.redis.lpop(f"rq:queue:{model_queue(QUEUE_BACKGROUND, MAIN_KEY)}").decode() == queued[0]
    faulty.start_worker()
    for queued_id in queued:
        assert poll_job(http, queued_id, timeout=60)["status"] == "finished"


def test_sigterm_finishes_the_current_job_and_a_second_one_stops_it(faulty, http):
    ensure_worker(faulty)
    job_id = submit(http, babble(max_tokens=600, temperature=0))
    poll_job(http, job_id, until=("started",), timeout=30)
    faulty.worker.send_signal(signal.SIGTERM)
    assert poll_job(http, job_id, timeout=60)["status"] == "finished"
    faulty.worker.wait(30)  # the worker exits after its current job

    faulty.start_worker()
    job_id = submit(http, babble())
    with http.stream("GET", f"/v1/jobs/{job_id}/events") as response:
        def terminate_twice(frame):
            if frame["event"] == "content_block_delta" and frame["id"] == 10:
                faulty.worker.send_signal(signal.SIGTERM)
                time.sleep(1.5)  # rq ignores a second signal within a second (a pool's duplicate)
                faulty.worker.send_signal(signal.SIGTERM)
        frames = stream_until_end(response, terminate_twice)
    assert frames[-1]["event"] == "error" and "shut down" in frames[-1]["data"]["error"]["message"]
    faulty.worker.wait(30)
    assert poll_job(http, job_id, timeout=10)["status"] in ("failed", "cancelled")


def test_sigusr1_writes_the_workers_stacks_to_its_log_and_the_job_goes_on(faulty, http):
    ensure_worker(faulty)
    log = faulty.logs / "worker.log"
    before = log.stat().st_size
    job_id = submit(http, babble(max_tokens=300, temperature=0))
    poll_job(http, job_id, until=("started",), timeout=30)
    faulty.worker.send_signal(signal.SIGUSR1)
    assert poll_job(http, job_id, timeout=60)["status"] == "finished" and worker_alive(faulty)
    with open(log, "rb") as file:
        file.seek(before)
        written = file.read().decode(errors="replace")
    assert "most recent call first" in written and "run_worker" in written, written[-2000:]


def test_redis_restart_mid_stream_is_a_pause_and_503s_meanwhile(faulty, http):
    ensure_worker(faulty)
    statuses = []

    def restart_redis_once(frame):
        if frame["event"] == "content_block_delta" and frame["id"] == 20:
            faulty.redis_server.stop()
            statuses.append(http.post("/v1/jobs", json={"request": SHORT}))
            statuses.append(http.get(f"/v1/jobs/{job_id}"))
            # Down for longer than a heartbeat lives, so the worker's has expired when Redis is back;
            # the worker then takes a moment to beat again, well within a TTL: it is not taken for dead.
            time.sleep(int(faulty.env["HEARTH_HEARTBEAT_TTL"]) + 1)
            faulty.worker.send_signal(signal.SIGSTOP)
            try:
                faulty.redis_server.start()
                time.sleep(1)
            finally:
                faulty.worker.send_signal(signal.SIGCONT)

    job_id = submit(http, babble(max_tokens=1500))
    with http.stream("GET", f"/v1/jobs/{job_id}/events") as response:
        frames = stream_until_end(response, restart_redis_once)

    assert [r.status_code for r in statuses] == [503, 503]
    assert all(r.json()["type"] == "error" for r in statuses)
    ids = [f["id"] for f in frames if f["id"] is not None and f["event"] != "message_stop"]
    assert ids == list(range(2, len(ids) + 2)), "the stream lost or repeated events across the restart"
    assert frames[-1]["event"] == "message_stop", frames[-1]
    view = poll_job(http, job_id, timeout=30)
    assert view["status"] == "finished" and view["message"]["usage"]["output_tokens"] == 1500
    # Enqueue and poll work again without restarting Hearth.
    assert poll_job(http, submit(http, SHORT), timeout=60)["status"] == "finished"


def test_a_job_that_raises_fails_and_the_next_one_runs_with_the_cache_intact(faulty, http):
    ensure_worker(faulty)
    request = dict(SHORT, messages=[{"role": "user", "content": "a prompt worth caching " * 40}])
    assert poll_job(http, submit(http, request), timeout=60)["status"] == "finished"
    faulty.redis.set(FAULT_KEY, "memory-error")
    with http.stream("POST", "/v1/messages", json=dict(request, stream=True)) as response:
        frames = stream_until_end(response)
    assert frames[-1]["event"] == "error" and "out-of-memory" in frames[-1]["data"]["error"]["message"]
    job_id = frames[0]["data"]["message"]["id"].removeprefix("msg_")
    assert poll_job(http, job_id, until=("failed",), timeout=10)["error"]["type"] == "api_error"

    response = http.post("/v1/messages", json=request)
    assert response.status_code == 200
    assert response.json()["usage"]["cache_read_input_tokens"] > 100  # the model and its cache survived


def rss_kib(pid: int) -> int:
    """Resident memory of a process and its children (gunicorn's workers hold the streams)."""
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    sizes = subprocess.run(["ps", "-o", "rss=", "-p", ",".join([str(pid), *children])],
                           capture_output=True, text=True).stdout.split()
    assert children and len(sizes) == 1 + len(children)
    return sum(int(size) for size in sizes)


def test_a_frozen_reader_is_dropped_and_its_job_cancelled(faulty, http):
    ensure_worker(faulty)
    body = json.dumps(babble(stream=True)).encode()
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: a small window
        sock.connect(("127.0.0.1", int(faulty.env["HEARTH_PORT"])))
        sock.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        head = sock.recv(2048).decode(errors="replace")
        job_id = head.split('"id":"msg_', 1)[1].split('"', 1)[0] if '"id":"msg_' in head else None
        api_rss = []
        if job_id is None:  # message_start came in a later segment
            job_id = sock.recv(4096).decode(errors="replace").split('"id":"msg_', 1)[1].split('"', 1)[0]
        # Then never read again: the API's sends block until its send timeout drops the stream.
        deadline = time.monotonic() + SEND_TIMEOUT + 20
        while time.monotonic() < deadline:
            api_rss.append(rss_kib(faulty.api.pid))
            if http.get(f"/v1/jobs/{job_id}").json()["status"] == "cancelled":
                break
            time.sleep(0.5)
    assert http.get(f"/v1/jobs/{job_id}").json()["status"] == "cancelled"
    assert max(api_rss) - api_rss[0] < 50_000, api_rss  # KiB: bounded, not the stream piling up


def test_pubsub_output_buffer_drops_are_filled_from_the_log(faulty, http):
    ensure_worker(faulty)
    # Redis disconnects any subscriber with more than 1 KB waiting: deltas are dropped all the time.
    faulty.redis.config_set("client-output-buffer-limit", "pubsub 1024 1024 0")
    try:
        job_id = submit(http, babble(max_tokens=800))
        with http.stream("GET", f"/v1/jobs/{job_id}/events") as response:
            frames = stream_until_end(response)
    finally:
        faulty.redis.config_set("client-output-buffer-limit", "pubsub 33554432 8388608 60")
    ids = [f["id"] for f in frames if f["id"] is not None and f["event"] != "message_stop"]
    assert ids == list(range(2, len(ids) + 2))
    text = "".join(f["data"]["delta"].get("text", "") for f in frames if f["event"] == "content_block_delta")
    assert text == poll_job(http, job_id)["message"]["content"][0]["text"]


def test_a_client_that_leaves_during_prefill_cancels_its_job(faulty, http):
    ensure_worker(faulty)
    long_prompt = "the quick brown fox jumps over the lazy dog " * 3000  # ~54K tokens, within the window
    request = babble(stream=True, messages=[{"role": "user", "content": long_prompt}])
    with http.stream("POST", "/v1/messages", json=request) as response:
        lines = response.iter_lines()
        first = next(line for line in lines if line.startswith("data: "))
    job_id = json.loads(first[6:])["message"]["id"].removeprefix("msg_")
    view = poll_job(http, job_id, until=("cancelled",), timeout=15)
    events = faulty.redis.xrange(f"hearth:events:{job_id}")
    assert all(b'"type":"started"' not in fields[b"e"] for _, fields in events), "prefill had finished"
    assert view["status"] == "cancelled"


def test_api_shutdown_ends_open_streams_with_an_error(faulty, http):
    ensure_worker(faulty)
    with http.stream("POST", "/v1/messages", json=babble(stream=True)) as response:
        def stop_api(frame):
            if frame["event"] == "content_block_delta" and frame["id"] == 5:
                faulty.api.send_signal(signal.SIGTERM)
                stopping.append(time.monotonic())
        stopping = []
        frames = stream_until_end(response, stop_api)
    assert frames[-1]["event"] == "error", frames[-3:]
    assert frames[-1]["data"]["error"]["type"] == "overloaded_error"  # the SDKs retry it
    # It carries the last event's id: a client resuming from it misses nothing.
    assert frames[-1]["id"] == frames[-2]["id"]
    assert time.monotonic() - stopping[0] < 12  # gunicorn's graceful timeout is 10 s
    faulty.api.wait(20)
    faulty.start_api()
    job_id = frames[0]["data"]["message"]["id"].removeprefix("msg_")
    assert poll_job(http, job_id, timeout=15)["status"] == "cancelled"  # nobody listens to it any more
