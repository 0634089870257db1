"""The systems a benchmark runs side by side, as child processes on free ports.

- HearthSystem: a private redis-server, `hearth worker` and `hearth api`,
  with the babbler (scripts/build_babbler.py) as the fast model;
- MlxLmServer: mlx-lm's own server on a model directory.
"""

import os
from pathlib import Path
import signal
import socket
import subprocess
import sys
import time

import httpx
from redis import Redis
from rq.job import Job

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hearth.redis_server import start_redis_server  # noqa: E402

BABBLER = "claude-haiku-4-5"  # the name that reaches HEARTH_FAST_MODEL, the babbler here


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(url: str, what: str, log: Path, timeout: float = 180):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not become ready; see {log}")


class HearthSystem:
    """redis-server, worker and API; `env` adds or overrides Hearth settings (HEARTH_MAX_BATCH=1, ...)."""

    def __init__(self, workdir: Path, babbler: Path, name: str = "hearth", workers: int = 1, **env):
        workdir = workdir / name
        workdir.mkdir(parents=True, exist_ok=True)
        self.redis = start_redis_server(free_port(), workdir / "redis")
        port = free_port()
        self.env = dict(os.environ, REDIS_URL=self.redis.url, HEARTH_PORT=str(port), HEARTH_FAST_MODEL=str(babbler),
                        HEARTH_HOME=str(workdir / "home"), HEARTH_LOG_LEVEL="WARNING", HEARTH_CACHE_DIR="", **env)
        self.env.pop("HEARTH_MODEL", None)
        self.base_url = f"http://127.0.0.1:{port}"
        self.log = workdir / "hearth.log"
        log = open(self.log, "ab")
        # Several workers stand for several Macs: each its own name (its own queue and routing).
        self.children = [subprocess.Popen([sys.executable, "-m", "hearth.cli", "worker"], cwd=REPO,
                                          env=dict(self.env, HEARTH_WORKER_NAME=f"{name}-w{n}"),
                                          stdout=log, stderr=subprocess.STDOUT) for n in range(workers)]
        self.children.append(subprocess.Popen([sys.executable, "-m", "hearth.cli", "api"], env=self.env, cwd=REPO,
                                              stdout=log, stderr=subprocess.STDOUT))
        self.http = httpx.Client(base_url=self.base_url, timeout=600)
        self.rq = Redis.from_url(self.redis.url)
        wait_for(self.base_url + "/healthz", "Hearth", self.log)
        deadline = time.monotonic() + 180
        while len(self.rq.keys("hearth:worker:*")) < workers:
            if time.monotonic() > deadline:
                raise RuntimeError(f"fewer than {workers} workers came up; see {self.log}")
            time.sleep(0.2)
        if workers > 1:
            time.sleep(1.5)  # the API's view of the live workers refreshes each second

    def status(self, job_id: str) -> str:
        """From rq directly, so that polling adds no HTTP traffic to what is measured."""
        return Job.fetch(job_id, connection=self.rq).get_status().value

    def stop(self):
        self.http.close()
        for child in reversed(self.children):
            child.send_signal(signal.SIGTERM)
            child.wait(30)
        self.redis.stop()


class MlxLmServer:
    def __init__(self, workdir: Path, model: Path, *args: str):
        self.log = workdir / "mlx_lm_server.log"
        port = free_port()
        self.base_url = f"http://127.0.0.1:{port}"
        self.process = subprocess.Popen([sys.executable, "-m", "mlx_lm", "server", "--model", str(model),
                                         "--port", str(port), *args],
                                        stdout=subprocess.DEVNULL, stderr=open(self.log, "ab"))
        wait_for(self.base_url + "/v1/models", "mlx_lm.server", self.log)

    def stop(self):
        self.process.terminate()
        self.process.wait(30)
