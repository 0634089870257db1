"""Real processes: a private redis-server, `hearth worker` and `hearth api` (gunicorn).

Nothing here touches the Redis on 6379 or port 8080: every server gets a free port.
The fast model (claude-haiku-*) is the babbler (scripts/build_babbler.py): it
never ends by itself, a long generation to cancel or preempt on demand.
"""

import contextlib
import json
import os
from pathlib import Path
import shutil
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest
from redis import Redis

from hearth.contract import priority_of
from hearth.models import model_key
from hearth.reaper import hearth_queues
from hearth.settings import BUNDLED_MODEL
from scripts.build_babbler import build_babbler

REPO = Path(__file__).resolve().parents[2]
MAIN_KEY = model_key(BUNDLED_MODEL)  # the main model's queues are `interactive:hearth-tiny`, ...


def started_job_ids(redis, priority: str) -> set:
    """Jobs rq has started, at `priority`, whichever model's or worker's queue they came from."""
    return {job_id for queue in hearth_queues(redis) if priority_of(queue.name) == priority
            for job_id in queue.started_job_registry.get_job_ids()}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):  # not up yet
            if check():
                return
        time.sleep(0.1)
    raise TimeoutError(f"{what} not ready after {timeout}s")


def stop_process(process: subprocess.Popen, sig=signal.SIGTERM, timeout: float = 20):
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed: `apt-get install redis-server` or `brew install redis`")
    port = free_port()
    data = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                "--appendonly", "no", "--dir", str(data)], stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    wait_until(lambda: Redis.from_url(url).ping(), 10, "redis-server")
    yield url
    stop_process(process)


@pytest.fixture(scope="session")
def babbler_model(tmp_path_factory) -> str:
    return str(build_babbler(tmp_path_factory.mktemp("babbler")))


CODER_MODEL = str(REPO / "models" / "hearth-tiny-coder")


@pytest.fixture(scope="session")
def hearth_env(redis_url, babbler_model, tmp_path_factory):
    port = free_port()
    # The Qwen3-Coder variant is served under an alias, as a user would configure it.
    aliases = tmp_path_factory.mktemp("aliases") / "aliases.json"
    aliases.write_text(json.dumps({"qwen3-coder": CODER_MODEL}))
    env = dict(os.environ, REDIS_URL=redis_url, HEARTH_PORT=str(port), HEARTH_FAST_MODEL=babbler_model,
               HEARTH_ALIASES=str(aliases),
               HEARTH_PING_INTERVAL="0.5", HEARTH_HEARTBEAT_TTL="3", HEARTH_LOG_LEVEL="INFO",
               HEARTH_HOME=str(tmp_path_factory.mktemp("home")))
    env.pop("HEARTH_MODEL", None)
    return env


# Hearths whose processes are up: a failing test's report carries what they logged during it.
RUNNING: list["Hearth"] = []
LOG_OFFSETS = pytest.StashKey[dict]()  # per test: each running Hearth's log sizes when it began
LOG_LINES_ON_FAILURE = 40


def tail(path: Path, offset: int = 0, lines: int = LOG_LINES_ON_FAILURE) -> str:
    """The last `lines` lines written to `path` after byte `offset`."""
    try:
        with open(path, "rb") as log:
            log.seek(offset)
            written = log.read().decode(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(written.splitlines()[-lines:])


class Hearth:
    LOG_NAMES = ("api.log", "worker.log")

    def __init__(self, env, logs: Path):
        self.env = env
        self.logs = logs
        self.base_url = f"http://127.0.0.1:{env['HEARTH_PORT']}"
        self.redis = Redis.from_url(env["REDIS_URL"])
        self.worker = None
        self.api = None

    def start_worker(self):
        log = open(self.logs / "worker.log", "ab")
        self.worker = subprocess.Popen([sys.executable, "-m", "hearth.cli", "worker"], env=self.env, cwd=REPO,
                                       stdout=log, stderr=subprocess.STDOUT)
        self._running()
        wait_until(lambda: httpx.get(self.base_url + "/healthz").status_code == 200 if self.api else
                   bool(self.redis.keys("hearth:worker:*")), 120, "hearth worker")

    def start_api(self):
        log = open(self.logs / "api.log", "ab")
        self.api = subprocess.Popen([sys.executable, "-m", "hearth.cli", "api"], env=self.env, cwd=REPO,
                                    stdout=log, stderr=subprocess.STDOUT)
        self._running()
        wait_until(lambda: httpx.get(self.base_url + "/v1/models").status_code == 200, 60, "hearth api")

    def stop(self):
        for process in (self.api, self.worker):
            if process:
                stop_process(process)
        if self in RUNNING:
            RUNNING.remove(self)

    def _running(self):
        if self not in RUNNING:
            RUNNING.append(self)

    def log_sizes(self) -> dict:
        return {name: (self.logs / name).stat().st_size if (self.logs / name).exists() else 0
                for name in self.LOG_NAMES}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    item.stash[LOG_OFFSETS] = {hearth: hearth.log_sizes() for hearth in RUNNING}
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test's report ends with what each running Hearth logged while it ran: CI shows only
    the output, and a hang or a 500 is read from the worker's and the API's side."""
    report = (yield).get_result()
    if not report.failed or call.when == "teardown":
        return
    offsets = item.stash.get(LOG_OFFSETS, {})
    for hearth in RUNNING:
        for name in hearth.LOG_NAMES:
            text = tail(hearth.logs / name, offsets.get(hearth, {}).get(name, 0))
            if text:
                report.sections.append((f"Hearth {hearth.base_url} {name}, last lines during the test", text))


@pytest.fixture(scope="session")
def hearth(hearth_env, tmp_path_factory):
    running = Hearth(hearth_env, tmp_path_factory.mktemp("logs"))
    running.start_api()
    running.start_worker()
    yield running
    running.stop()


@pytest.fixture
def http(hearth):
    """An HTTP client of the module's Hearth (the session's, or the module's own `hearth` fixture's)."""
    with httpx.Client(base_url=hearth.base_url, timeout=120) as client:
        yield client


def unfinished_job_ids(redis) -> set:
    """Jobs queued or started in any of Hearth's queues."""
    return {job_id for queue in hearth_queues(redis)
            for job_id in queue.get_job_ids() + queue.started_job_registry.get_job_ids()}


@pytest.fixture(autouse=True)
def nothing_left_running(request):
    """The session's Hearth is shared: what a test leaves queued or running is cancelled after it,
    so the next test starts with a worker of free slots (and a test that counts jobs counts its own)."""
    yield
    if "hearth" not in request.fixturenames:
        return
    hearth = request.getfixturevalue("hearth")
    deadline = time.monotonic() + 30
    while (left := unfinished_job_ids(hearth.redis)) and time.monotonic() < deadline:
        for job_id in left:
            try:
                httpx.delete(f"{hearth.base_url}/v1/jobs/{job_id}", timeout=5)
            except httpx.HTTPError:
                pass  # a test that stopped the API: the reaper's to clean up
        time.sleep(0.2)


@pytest.fixture(scope="module")
def private_hearth(hearth_env, tmp_path_factory):
    """private_hearth(**env) -> a Hearth of the module's own (its own redis-server too), with `env` changed."""
    made = []

    def make(**env) -> Hearth:
        port = free_port()
        redis_process = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                          "--appendonly", "no", "--dir", str(tmp_path_factory.mktemp("redis"))],
                                         stdout=subprocess.DEVNULL)
        url = f"redis://127.0.0.1:{port}/0"
        wait_until(lambda: Redis.from_url(url).ping(), 10, "redis-server")
        running = Hearth(dict(hearth_env, REDIS_URL=url, HEARTH_PORT=str(free_port()),
                              HEARTH_HOME=str(tmp_path_factory.mktemp("home")), **env),
                         tmp_path_factory.mktemp("logs"))
        made.append((running, redis_process))
        running.start_api()
        running.start_worker()
        return running

    yield make
    for running, redis_process in made:
        running.stop()
        stop_process(redis_process)
