"""Job polling benchmark: what `GET /v1/jobs/{id}` of a running job costs as the job grows.

    python bench/job_polling.py [--tokens 10000] [--polls 30]

Runs the real system (a private redis-server, `hearth worker` and `hearth
api`) and one background job on the babbler (scripts/build_babbler.py, it
never stops by itself), greedy, for --tokens tokens. A client polls the job
over HTTP, one poll after another, and keeps the polls made while the job
was near 100 output tokens and near --tokens. Measured side by side at the
same moments:

- hearth: the poll through the API (the worker keeps the running text and
  counts in Redis as they grow: a few reads whatever the length);
- rebuild: what a poll cost before, the job's whole event log read and
  assembled into its text (XRANGE + MessageAssembler), done here in-process;
- limit: the Redis reads alone (one MGET of the same keys), in-process.

Prints median milliseconds at each length and the ratio long / short. The
target: a poll at --tokens costs about what one at 100 costs.
"""

import argparse
from datetime import datetime
from pathlib import Path
import statistics
import sys
import tempfile
import time

sys.path.insert(0, str(Path(__file__).resolve().parent))

from hearth_system import BABBLER, HearthSystem

from hearth.contract import Event, events_key, partial_key, progress_key
from hearth.message import MessageAssembler
from scripts.build_babbler import build_babbler

SHORT = (50, 200)  # output tokens counted as "about 100"


def rebuild(redis, job_id: str) -> str:
    """The job's text so far the way polls used to get it: from the whole event log."""
    assembler = MessageAssembler()
    for _, fields in redis.xrange(events_key(job_id)):
        assembler.apply(Event.from_json(fields[b"e"]))
    return assembler.text("text")


def read_keys(redis, job_id: str):
    return redis.mget(progress_key(job_id), partial_key(job_id, "text"), partial_key(job_id, "thinking"))


def timed(call) -> tuple[float, object]:
    started = time.perf_counter()
    result = call()
    return (time.perf_counter() - started) * 1000, result


def poll_while_running(system: HearthSystem, job_id: str, tokens: int, polls: int) -> dict:
    """Poll until the job ends; the samples taken near 100 and near `tokens` output tokens."""
    samples = {"short": [], "long": []}
    while True:
        poll_ms, view = timed(lambda: system.http.get(f"/v1/jobs/{job_id}").json())
        if view["status"] != "started":
            if view["status"] in ("finished", "failed", "cancelled"):
                return samples
            continue
        done = view["progress"]["output_tokens"]
        length = "short" if SHORT[0] <= done <= SHORT[1] else "long" if done >= tokens - 400 else None
        if length is None or len(samples[length]) >= polls:
            time.sleep(0.002)
            continue
        rebuild_ms, _ = timed(lambda: rebuild(system.rq, job_id))
        limit_ms, _ = timed(lambda: read_keys(system.rq, job_id))
        samples[length].append({"tokens": done, "chars": len(view["progress"]["text"]),
                                "hearth": poll_ms, "rebuild": rebuild_ms, "limit": limit_ms})


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=10_000)
    parser.add_argument("--polls", type=int, default=30, help="polls kept at each length")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hearth-bench-polling-") as tmp:
        workdir = Path(tmp)
        system = HearthSystem(workdir, build_babbler(workdir / "babbler"))
        try:
            request = {"model": BABBLER, "max_tokens": args.tokens, "temperature": 0,
                       "messages": [{"role": "user", "content": "Write the whole report."}]}
            job_id = system.http.post("/v1/jobs", json={"request": request, "priority": "background"}).json()["id"]
            samples = poll_while_running(system, job_id, args.tokens, args.polls)
        finally:
            system.stop()
    print(f"Job polling, {datetime.now():%Y-%m-%d %H:%M}: GET /v1/jobs/{{id}} of a running background job "
          f"(babbler, greedy, {args.tokens} tokens), median of {args.polls} polls at each length")
    medians = {}
    for length, rows in samples.items():
        if not rows:
            sys.exit(f"no polls near the {length} length: the job ended too soon")
        medians[length] = {who: statistics.median(row[who] for row in rows) for who in ("hearth", "rebuild", "limit")}
        tokens = statistics.median(row["tokens"] for row in rows)
        chars = statistics.median(row["chars"] for row in rows)
        print(f"  at ~{tokens:>6.0f} output tokens ({chars:>6.0f} chars of text): "
              + "  ".join(f"{who} {ms:7.2f} ms" for who, ms in medians[length].items()))
    for who in ("hearth", "rebuild", "limit"):
        print(f"  {who:>8}: long / short = {medians['long'][who] / medians['short'][who]:.2f}x")


if __name__ == "__main__":
    main()
