"""Preemption benchmark: interactive turns arriving while a long background job decodes.

    python bench/preemption.py [--background-tokens 1500] [--requests 12] [--seed 1]

Runs the real system: a private redis-server, `hearth worker` and `hearth api`.
The background job runs on the babbler (scripts/build_babbler.py: the bundled
model's shape and cost per token, but it never stops by itself), greedy, for
--background-tokens tokens. Interactive requests are short streamed Messages
turns on the bundled model. Measured in the same run:

1. idle: interactive time to first token (TTFT) with the worker idle;
2. alone: the background job's total time, uninterrupted;
3. preempted: the same background job again, with interactive requests sent
   one after another at random moments while it runs: their TTFT, and the
   background job's total time (its greedy output must be unchanged);
4. no preemption: the same again with the background job submitted at
   interactive priority, which is never suspended: what a turn waits for
   without this feature.

Prints TTFT ratios to idle, the background ratio to alone, and the issue's
target: preempted TTFT at most one decode step plus 50 ms above idle.
"""

import argparse
from datetime import datetime
import os
from pathlib import Path
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import httpx
from redis import Redis
from rq.job import Job

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hearth.redis_server import start_redis_server  # noqa: E402
from scripts.build_babbler import build_babbler  # noqa: E402

BABBLER = "claude-haiku-4-5"  # HEARTH_FAST_MODEL is the babbler here
INTERACTIVE = {"model": "claude-sonnet-4-6", "max_tokens": 16, "stream": True,
               "messages": [{"role": "user", "content": "hello"}]}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class System:
    """redis-server, worker and API as child processes, on free ports."""

    def __init__(self, workdir: Path):
        babbler = build_babbler(workdir / "babbler")
        self.redis = start_redis_server(free_port(), workdir / "redis")
        port = free_port()
        self.env = dict(os.environ, REDIS_URL=self.redis.url, HEARTH_PORT=str(port), HEARTH_FAST_MODEL=str(babbler),
                        HEARTH_HOME=str(workdir / "home"), HEARTH_LOG_LEVEL="WARNING")
        self.env.pop("HEARTH_MODEL", None)
        self.base_url = f"http://127.0.0.1:{port}"
        log = open(workdir / "hearth.log", "ab")
        self.children = [subprocess.Popen([sys.executable, "-m", "hearth.cli", role], env=self.env, cwd=REPO,
                                          stdout=log, stderr=subprocess.STDOUT) for role in ("worker", "api")]
        self.http = httpx.Client(base_url=self.base_url, timeout=600)
        self.rq = Redis.from_url(self.redis.url)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if self.http.get("/healthz").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError("Hearth did not become healthy; see hearth.log")

    def status(self, job_id: str) -> str:
        """From rq directly: GET /v1/jobs/{id} assembles the whole output so far, which would load the API."""
        return Job.fetch(job_id, connection=self.rq).get_status().value

    def stop(self):
        self.http.close()
        for child in reversed(self.children):
            child.send_signal(signal.SIGTERM)
            child.wait(30)
        self.redis.stop()


def interactive_ttft(http: httpx.Client) -> float:
    """Seconds from sending a streamed turn to its first content delta."""
    started = time.perf_counter()
    ttft = None
    with http.stream("POST", "/v1/messages", json=INTERACTIVE) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if ttft is None and line == "event: content_block_delta":
                ttft = time.perf_counter() - started
    return ttft


def run_background(system: System, tokens: int, priority: str, during=None) -> tuple[float, list, int]:
    """Submit the greedy background job, run `during(job_id)` alongside; (seconds, content, suspensions)."""
    request = {"model": BABBLER, "max_tokens": tokens, "temperature": 0,
               "messages": [{"role": "user", "content": "Work through the backlog."}]}
    job_id = system.http.post("/v1/jobs", json={"request": request, "priority": priority}).json()["id"]
    worker = threading.Thread(target=during, args=(job_id,)) if during else None
    if worker:
        worker.start()
    while system.status(job_id) not in ("finished", "failed", "stopped", "canceled"):
        time.sleep(0.05)
    if worker:
        worker.join()
    view = system.http.get(f"/v1/jobs/{job_id}").json()
    assert view["status"] == "finished", view
    started = view["started_at"].replace("Z", "+00:00")
    ended = view["ended_at"].replace("Z", "+00:00")
    seconds = (datetime.fromisoformat(ended) - datetime.fromisoformat(started)).total_seconds()
    return seconds, view["message"]["content"], view.get("suspensions", 0)


def interrupt(system: System, count: int, rng: random.Random, ttfts: list):
    """`during`: once the job has started, `count` interactive turns at random moments, one at a time."""
    def run(job_id):
        while system.status(job_id) == "queued":
            time.sleep(0.01)
        for _ in range(count):
            time.sleep(rng.uniform(0.05, 0.4))
            if system.status(job_id) == "finished":
                break
            ttfts.append(interactive_ttft(system.http))
    return run


def median(values):
    return statistics.median(values) if values else float("nan")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--background-tokens", type=int, default=1500)
    parser.add_argument("--requests", type=int, default=12)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)

    with tempfile.TemporaryDirectory() as workdir:
        system = System(Path(workdir))
        try:
            for _ in range(3):
                interactive_ttft(system.http)  # warm both models' caches and kernels
            run_background(system, 64, "background")
            idle = [interactive_ttft(system.http) for _ in range(args.requests)]
            alone_s, alone_content, _ = run_background(system, args.background_tokens, "background")
            preempted = []
            preempted_s, preempted_content, suspensions = run_background(
                system, args.background_tokens, "background", interrupt(system, args.requests, rng, preempted))
            blocked = []
            blocked_s, _, _ = run_background(system, args.background_tokens, "interactive",
                                             interrupt(system, max(2, args.requests // 4), rng, blocked))
        finally:
            system.stop()

    step = alone_s / args.background_tokens
    idle_ms, preempted_ms = median(idle) * 1000, median(preempted) * 1000
    worst_ms = max(preempted) * 1000 if preempted else float("nan")
    target_ms = idle_ms + step * 1000 + 50
    print(f"background job: {args.background_tokens} tokens greedy on the babbler; "
          f"decode step {step * 1000:.1f} ms; {len(preempted)} interactive turns during it, "
          f"{suspensions} suspensions")
    print(f"greedy output unchanged by suspensions: {preempted_content == alone_content}")
    print(f"interactive TTFT, worker idle:            {idle_ms:7.1f} ms median (1.00x)")
    print(f"interactive TTFT, preempting background:  {preempted_ms:7.1f} ms median "
          f"({preempted_ms / idle_ms:.2f}x idle), worst {worst_ms:.1f} ms ({worst_ms / idle_ms:.2f}x)")
    print(f"interactive TTFT, no preemption:          {median(blocked) * 1000:7.1f} ms median "
          f"({median(blocked) * 1000 / idle_ms:.1f}x idle)")
    print(f"target (idle + one decode step + 50 ms):  {target_ms:7.1f} ms: median "
          f"{'met' if preempted_ms <= target_ms else 'missed'}, worst {'met' if worst_ms <= target_ms else 'missed'}")
    print(f"background total time, preempted / alone: {preempted_s / alone_s:.2f}x "
          f"({preempted_s:.2f}s / {alone_s:.2f}s); without preemption {blocked_s / alone_s:.2f}x")


if __name__ == "__main__":
    main()
