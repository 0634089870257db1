"""Preemption benchmark: interactive turns arriving while background jobs decode.

    python bench/preemption.py [--background-tokens 1500] [--requests 12] [--seed 1]

Runs the real system (a private redis-server, `hearth worker` and `hearth
api`) with two slots (HEARTH_MAX_BATCH=2), so both cases a user meets show:
a free slot, and every slot held by background work. The background job
runs on the babbler (scripts/build_babbler.py: the bundled model's shape and
cost per token, but it never stops by itself), greedy, for
--background-tokens tokens. Interactive requests are short streamed Messages
turns on the bundled model, sent one after another at random moments.
Measured in the same run:

1. idle: interactive time to first token (TTFT) with the worker idle;
2. alone: the background job's total time, uninterrupted;
3. joined: the same job with interactive turns arriving while a slot is free:
   they decode beside it;
4. preempted: the same job beside a second background job that holds the
   other slot: each turn needs a slot, and the newest background job (the
   one measured) steps aside for it and resumes; its greedy output must be
   unchanged;
5. no preemption: both background jobs at interactive priority, which is
   never suspended: what a turn waits for without preemption.

Prints TTFT ratios to idle, the background job's time ratios to alone, and
the target: preempted TTFT at most one decode step plus 50 ms above idle.
"""

import argparse
from datetime import datetime
from pathlib import Path
import random
import statistics
import sys
import tempfile
import threading
import time

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from hearth_system import BABBLER, HearthSystem

from scripts.build_babbler import build_babbler

INTERACTIVE = {"model": "claude-sonnet-4-6", "max_tokens": 16, "stream": True,
               "messages": [{"role": "user", "content": "hello"}]}


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


def submit(system: HearthSystem, tokens: int, priority: str, prompt: str = "Work through the backlog.") -> str:
    request = {"model": BABBLER, "max_tokens": tokens, "temperature": 0,
               "messages": [{"role": "user", "content": prompt}]}
    return system.http.post("/v1/jobs", json={"request": request, "priority": priority}).json()["id"]


def run_background(system: HearthSystem, tokens: int, priority: str, during=None) -> tuple[float, list, int]:
    """Submit the greedy background job, run `during(job_id)` alongside; (seconds, content, suspensions)."""
    job_id = submit(system, tokens, priority)
    worker = threading.Thread(target=during, args=(job_id,)) if during else None
    if worker:
        worker.start()
    while system.status(job_id) not in ("finished", "failed", "stopped", "canceled"):
        time.sleep(0.05)
    if worker:
        worker.join()
    view = system.http.get(f"/v1/jobs/{job_id}").json()
    assert view["status"] == "finished", view
    started = view["started_at"].replace("Z", "+00:00")  # the first run's, across suspensions
    ended = view["ended_at"].replace("Z", "+00:00")
    seconds = (datetime.fromisoformat(ended) - datetime.fromisoformat(started)).total_seconds()
    return seconds, view["message"]["content"], view.get("suspensions", 0)


def interrupt(system: HearthSystem, count: int, rng: random.Random, ttfts: list):
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


def holding_the_other_slot(system: HearthSystem, priority: str) -> str:
    """A second background job, started first (so the measured one is the newest), cancelled afterwards."""
    job_id = submit(system, 1_000_000, priority, "Fill the other slot.")
    while system.status(job_id) != "started":
        time.sleep(0.01)
    return job_id


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
        workdir = Path(workdir)
        system = HearthSystem(workdir, build_babbler(workdir / "babbler"), HEARTH_MAX_BATCH="2")
        try:
            for _ in range(3):
                interactive_ttft(system.http)  # warm both models' caches and kernels
            run_background(system, 64, "background")
            idle = [interactive_ttft(system.http) for _ in range(args.requests)]
            alone_s, alone_content, _ = run_background(system, args.background_tokens, "background")
            joined = []
            joined_s, joined_content, _ = run_background(
                system, args.background_tokens, "background", interrupt(system, args.requests, rng, joined))
            filler = holding_the_other_slot(system, "background")
            preempted = []
            preempted_s, preempted_content, suspensions = run_background(
                system, args.background_tokens, "background", interrupt(system, args.requests, rng, preempted))
            system.http.delete(f"/v1/jobs/{filler}")
            filler = holding_the_other_slot(system, "interactive")
            blocked = []
            blocked_s, _, _ = run_background(system, args.background_tokens, "interactive",
                                             interrupt(system, max(2, args.requests // 4), rng, blocked))
            system.http.delete(f"/v1/jobs/{filler}")
        finally:
            system.stop()

    step = alone_s / args.background_tokens
    idle_ms, joined_ms, preempted_ms = (median(v) * 1000 for v in (idle, joined, preempted))
    worst_ms = max(preempted) * 1000 if preempted else float("nan")
    target_ms = idle_ms + step * 1000 + 50
    print(f"background job: {args.background_tokens} tokens greedy on the babbler, two slots; "
          f"decode step {step * 1000:.1f} ms alone")
    print(f"greedy output unchanged beside interactive turns: {joined_content == alone_content}; "
          f"after {suspensions} suspensions: {preempted_content == alone_content}")
    print(f"interactive TTFT, worker idle:                   {idle_ms:7.1f} ms median (1.00x)")
    print(f"interactive TTFT, a slot free (joins the batch): {joined_ms:7.1f} ms median ({joined_ms / idle_ms:.2f}x), "
          f"worst {max(joined) * 1000:.1f} ms ({max(joined) * 1000 / idle_ms:.2f}x)")
    print(f"interactive TTFT, slots full (preempting):       {preempted_ms:7.1f} ms median "
          f"({preempted_ms / idle_ms:.2f}x), worst {worst_ms:.1f} ms ({worst_ms / idle_ms:.2f}x)")
    print(f"interactive TTFT, slots full, no preemption:     {median(blocked) * 1000:7.1f} ms median "
          f"({median(blocked) * 1000 / idle_ms:.1f}x)")
    print(f"target (idle + one decode step + 50 ms):         {target_ms:7.1f} ms: preempted median "
          f"{'met' if preempted_ms <= target_ms else 'missed'}, worst {'met' if worst_ms <= target_ms else 'missed'}")
    print(f"background job's total time over alone: beside turns {joined_s / alone_s:.2f}x, "
          f"preempted {preempted_s / alone_s:.2f}x, slots full without preemption {blocked_s / alone_s:.2f}x "
          f"(alone {alone_s:.2f}s)")


if __name__ == "__main__":
    main()
