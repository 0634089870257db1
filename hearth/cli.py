"""The `hearth` command.

    hearth up       Redis (found or started), the worker and the API; Ctrl-C stops all
    hearth worker   the resident MLX worker (one process)
    hearth api      the HTTP API under gunicorn (one port)
    hearth claude   Claude Code pointed at this Hearth; its arguments pass through
    hearth status   what Hearth is doing now: queues, workers, cache, recent jobs
"""

import argparse
import faulthandler
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request

from hearth.redis_server import NoRedis, find_or_start
from hearth.settings import Settings, hearth_home

log = logging.getLogger("hearth")


def configure_logging(level: str):
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")


def run_api(settings: Settings):
    command = [
        sys.executable, "-m", "gunicorn", "-k", "asgi", "-w", str(settings.api_workers),
        "-b", f"{settings.host}:{settings.port}", "--graceful-timeout", "10", "--timeout", "0",
        # One control socket per user would be shared by every gunicorn on the machine.
        "--no-control-socket", "-c", "python:api.gunicorn_conf",
        "--log-level", settings.log_level.lower(), "api.app:app",
    ]
    os.execv(sys.executable, command)


def run_worker(settings: Settings):
    from workers.worker import run_worker as work

    # `kill -USR1 <pid>`: every thread's stack to the log, the worker going on (a stuck one, explained).
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    work(settings)


def is_healthy(settings: Settings) -> bool:
    """The API answers and reports Redis and a worker alive."""
    try:
        with urllib.request.urlopen(f"http://{settings.host}:{settings.port}/healthz", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def stop_children(children):
    """Stop in reverse start order: the API first, so no new job arrives; Redis last."""
    for name, child in reversed(children):
        if child.poll() is None:
            log.info("stopping %s", name)
            child.send_signal(signal.SIGTERM)
    for name, child in reversed(children):
        try:
            child.wait(timeout=20)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop in time; killing it", name)
            child.kill()


def run_up(settings: Settings):
    home = hearth_home()
    redis_url = os.environ.get("REDIS_URL") or None
    local_port = int(os.environ.get("HEARTH_REDIS_PORT", "6379"))
    try:
        url, own_redis = find_or_start(redis_url, local_port, home / "redis")
    except NoRedis as exc:
        sys.exit(f"hearth: {exc}")
    env = dict(os.environ, REDIS_URL=url)
    children = []
    # Our own Ctrl-C handling: children get their own sessions and a SIGTERM, in order.
    stopping = []
    signal.signal(signal.SIGINT, lambda *_: stopping.append(True))
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    try:
        for name in ("worker", "api"):
            child = subprocess.Popen([sys.executable, "-m", "hearth.cli", name], env=env, start_new_session=True)
            children.append((name, child))
        log.info("starting Hearth (Redis %s, model %s)", url, settings.model)
        announced = False
        while not stopping:
            if any(child.poll() is not None for _, child in children):
                log.error("a Hearth process exited; stopping the others")
                break
            if not announced and is_healthy(settings):
                log.info("Hearth is up: http://%s:%d; Ctrl-C stops it", settings.host, settings.port)
                announced = True
            time.sleep(0.5)
    finally:
        stop_children(children)
        if own_redis:
            log.info("stopping redis-server")
            own_redis.stop()


HOW_TO_GET_CLAUDE_CODE = """Claude Code is not installed (no `claude` on the PATH). Get it with
  npm install -g @anthropic-ai/claude-code      (Node.js 18 or newer)
then run `hearth claude` again."""


def run_claude(settings: Settings, args: list):
    """Claude Code against this Hearth: same host and port as `hearth api`, its key if keys are set.

    Model names need no mapping: every `claude-*` name reaches the main model and
    `claude-haiku-*` the fast one (HEARTH_ALIASES can say otherwise).
    """
    binary = shutil.which("claude")
    if binary is None:
        sys.exit(f"hearth: {HOW_TO_GET_CLAUDE_CODE}")
    if not is_healthy(settings):
        log.warning("Hearth does not answer at http://%s:%d (start it with `hearth up`); starting Claude Code anyway",
                    settings.host, settings.port)
    env = dict(os.environ, ANTHROPIC_BASE_URL=f"http://{settings.host}:{settings.port}",
               ANTHROPIC_API_KEY=settings.api_keys[0] if settings.api_keys else "hearth-local")
    env.pop("ANTHROPIC_AUTH_TOKEN", None)  # it would be sent instead of the key
    # Everything stays local: no telemetry, error reports or update checks to Anthropic.
    env.setdefault("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
    os.execvpe(binary, [binary, *args], env)


def run_status(settings: Settings, args: list):
    """The status page's summary, read from Redis directly (no API needed)."""
    from redis import Redis
    from redis.exceptions import RedisError

    from hearth import status

    try:
        print(status.summary(status.snapshot(Redis.from_url(settings.redis_url), prompts="--prompts" in args)))
    except RedisError as exc:
        sys.exit(f"hearth: Redis at {settings.redis_url} does not answer ({exc}); is Hearth running?")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="hearth", description="Local MLX models for Claude Code, through Redis.")
    parser.add_argument("command", choices=["up", "worker", "api", "claude", "status"])
    parser.add_argument("args", nargs=argparse.REMAINDER,
                        help="for `hearth claude`: Claude Code's own arguments; for `hearth status`: --prompts")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    configure_logging(settings.log_level)
    if args.command == "claude":
        run_claude(settings, args.args)
    elif args.command == "status":
        run_status(settings, args.args)
    elif args.args:
        parser.error(f"`hearth {args.command}` takes no arguments")
    else:
        {"up": run_up, "worker": run_worker, "api": run_api}[args.command](settings)


if __name__ == "__main__":
    main()
