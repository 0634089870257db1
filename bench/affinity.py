"""Affinity benchmark: two workers of one model, a Claude Code-shaped trace, routed two ways.

    python bench/affinity.py [--conversations 4] [--turns 4] [--tool-chars 400]

Several conversations sharing tools and a system prompt, each opened with a
file's worth of text and then short follow-ups, interleaved: each round, every
conversation sends its next turn at once (as parallel subagents do), streamed,
and the round ends when all have answered. Side by side in one run, each on a
fresh system (cold caches, nothing on disk):

- one worker: the same trace on one worker, whose cache sees every turn: the
  least prefill any routing can reach (the minimum);
- rq's default: two workers, HEARTH_AFFINITY=0: each job to the first free worker;
- affinity: two workers, each conversation routed to the worker holding its prefix.

Prints the tokens prefilled (prompt tokens the cache did not hold) against the
minimum, and time to first token p50 and worst. Target: affinity within 1.05x
of the minimum.
"""

import argparse
from datetime import datetime
from pathlib import Path
import statistics
import sys
import tempfile
import threading
import time

import httpx
from rq.job import Job

sys.path.insert(0, str(Path(__file__).resolve().parent))

from claude_code_trace import Text, tools
from hearth_system import HearthSystem

from scripts.build_babbler import build_babbler

MODEL = "hearth-tiny"


def stream_turn(system: HearthSystem, request: dict) -> dict:
    """One streamed turn: its time to first token, its reply's text, and its usage as the worker counted it."""
    started = time.perf_counter()
    ttft, text, message_id = None, [], None
    with httpx.stream("POST", system.base_url + "/v1/messages", json=dict(request, stream=True),
                      timeout=600) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: "):
                continue
            if message_id is None and '"message_start"' in line:
                message_id = httpx.Response(200, content=line[6:]).json()["message"]["id"]
            elif '"content_block_delta"' in line:
                ttft = ttft or time.perf_counter() - started
                delta = httpx.Response(200, content=line[6:]).json()["delta"]
                text.append(delta.get("text", ""))
    job = Job.fetch(message_id.removeprefix("msg_"), connection=system.rq)
    while job.get_status() != "finished":  # rq records the result just after the stream's last event
        time.sleep(0.01)
    usage = job.return_value()["usage"]
    return {"ttft": ttft or time.perf_counter() - started, "text": "".join(text) or "ok",
            "prefilled": usage["input_tokens"], "cached": usage["cache_read_input_tokens"],
            "worker": job.worker_name}


def make_trace(conversations: int, turns: int, tool_chars: int) -> list[list[str]]:
    """Each conversation's user turns (the same trace for every system)."""
    text = Text(seed=11)
    return [[f"Here is the file I am working on:\n{text.take(2400)}\n\nWhat does it do?"] +
            [f"Next: {text.take(300)}" for _ in range(turns - 1)] for _ in range(conversations)]


def run(system: HearthSystem, trace: list, shared: dict) -> list:
    histories = [[] for _ in trace]
    results = []
    def send(n: int, turn: int, replies: dict):
        histories[n].append({"role": "user", "content": trace[n][turn]})
        request = {"model": MODEL, "max_tokens": 12, "temperature": 0, **shared, "messages": histories[n]}
        replies[n] = stream_turn(system, request)

    for turn in range(len(trace[0])):
        replies = {}
        threads = [threading.Thread(target=send, args=(n, turn, replies)) for n in range(len(trace))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for n in range(len(trace)):
            histories[n].append({"role": "assistant", "content": replies[n]["text"]})
            results.append(dict(replies[n], conversation=n, turn=turn))
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conversations", type=int, default=4)
    parser.add_argument("--turns", type=int, default=4)
    parser.add_argument("--tool-chars", type=int, default=400)
    args = parser.parse_args()
    text = Text(seed=5)
    shared = {"tools": tools(text, args.tool_chars), "system": text.take(3000)}
    trace = make_trace(args.conversations, args.turns, args.tool_chars)
    modes = {"one worker": (1, {}), "rq's default": (2, {"HEARTH_AFFINITY": "0"}), "affinity": (2, {})}
    print(f"Affinity, {datetime.now():%Y-%m-%d %H:%M}: {args.conversations} conversations x {args.turns} turns, "
          f"interleaved, sharing tools and a system prompt; bundled model, fresh system per mode")
    measured = {}
    with tempfile.TemporaryDirectory(prefix="hearth-bench-affinity-") as tmp:
        workdir = Path(tmp)
        babbler = build_babbler(workdir / "babbler")
        for name, (workers, env) in modes.items():
            system = HearthSystem(workdir, babbler, name.replace(" ", "-").replace("'", ""), workers=workers, **env)
            try:
                measured[name] = run(system, trace, shared)
            finally:
                system.stop()
    # The least prefill: the one worker's, plus the shared prefix once on each further worker a
    # mode used (a second Mac must compute the tools and system prompt once to serve anything).
    one = measured["one worker"]
    shared_tokens = max(r["cached"] for r in one if r["turn"] == 0)
    print(f"  shared prefix (tools and system prompt): {shared_tokens} tokens")
    for name, results in measured.items():
        prefilled = sum(r["prefilled"] for r in results)
        used = len({r["worker"] for r in results})
        minimum = sum(r["prefilled"] for r in one) + shared_tokens * (used - 1)
        ttfts = sorted(r["ttft"] for r in results)
        moved = sum(1 for r in results if r["turn"] > 0 and r["worker"] != next(
            x["worker"] for x in results if x["conversation"] == r["conversation"] and x["turn"] == r["turn"] - 1))
        print(f"  {name:>13}: {used} worker(s) used, prefilled {prefilled:6d} tokens = "
              f"{prefilled / minimum:.2f}x the minimum for them ({minimum}); "
              f"TTFT p50 {statistics.median(ttfts) * 1000:6.0f} ms, worst {ttfts[-1] * 1000:6.0f} ms; "
              f"later turns on another worker than the turn before: {moved}")
    print("  target: affinity <= 1.05x the minimum")


if __name__ == "__main__":
    main()
