"""Continuous batching benchmark: Hearth batched, Hearth with one slot, mlx-lm's server, and the limit.

    python bench/batching.py [--tokens 300] [--rounds 2] [--long-prompt 20000] [--long-prompts 1] [--many 64]

Everything runs on the babbler (scripts/build_babbler.py: the bundled
model's shape and cost per token, but it never stops by itself), greedy,
each stream with a prompt of its own, side by side in one run:

1. Throughput at 1, 4 and 8 concurrent streams of --tokens tokens:
   aggregate tokens/s and time to first token (TTFT, median and worst) for
   Hearth batched (default slots), Hearth with one slot (HEARTH_MAX_BATCH=1,
   one job at a time), mlx-lm's server (which batches), all driven by the
   same client through streamed OpenAI chat completions, and the limit:
   mlx-lm's BatchGenerator in this process (no queue, no HTTP).
2. Mixed load: four streams decoding while --long-prompts prompts of
   --long-prompt tokens each arrive together: the longest gap between two
   tokens of the four while they are prefilled, against their prefill time
   (the last one's TTFT), for Hearth and mlx-lm's server.
3. The queue's own cost for one request: TTFT through Hearth (streamed
   Messages) minus mlx-lm's stream_generate in this process on the same
   tokens, over ten prompts of 450-900 tokens, and where the time goes
   (rq's enqueued_at and the worker's own timestamps in the job's `started`
   event); the time between tokens through Hearth over the direct one.
4. Many streams through one API process: --many concurrent streams (the
   slots decoding, the rest queued): for every delta, the time from its
   publication in Redis (seen by this process's own subscriber) to its SSE
   frame reaching the client, median and p99.
"""

import argparse
import asyncio
import itertools
import json
from pathlib import Path
import statistics
import sys
import tempfile
import threading
import time

import httpx
from redis import Redis
from rq.job import Job

sys.path.insert(0, str(Path(__file__).resolve().parent))

from hearth_system import BABBLER, HearthSystem, MlxLmServer
from in_process import InProcess, prompt_of

from scripts.build_babbler import build_babbler


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


# --- clients -------------------------------------------------------------------------------------

def content_of(line: str) -> str:
    """The text of a chat-completion chunk's SSE line ('' for anything else)."""
    if not line.startswith("data: ") or line == "data: [DONE]":
        return ""
    choices = json.loads(line[6:]).get("choices") or [{}]
    return choices[0].get("delta", {}).get("content") or ""


async def chat_stream(client: httpx.AsyncClient, base_url: str, model: str, prompt: str, tokens: int,
                      on_token=None, system: str | None = None) -> dict:
    """One streamed chat completion: send time, and the arrival time of every content chunk."""
    messages = [{"role": "user", "content": prompt}]
    if system is not None:
        messages.insert(0, {"role": "system", "content": system})
    body = {"model": model, "max_tokens": tokens, "temperature": 0, "stream": True, "messages": messages}
    sent, arrivals = time.perf_counter(), []
    async with client.stream("POST", base_url + "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if content_of(line):
                arrivals.append(time.perf_counter())
                if on_token:
                    on_token()
    return {"sent": sent, "arrivals": arrivals}


async def concurrent_streams(base_url: str, model: str, n: int, tokens: int, offset: int = 0) -> dict:
    async with httpx.AsyncClient(timeout=None, limits=httpx.Limits(max_connections=n + 8)) as client:
        started = time.perf_counter()
        results = await asyncio.gather(*[chat_stream(client, base_url, model, prompt_of(offset + i), tokens)
                                         for i in range(n)])
        wall = time.perf_counter() - started
    ttfts = [r["arrivals"][0] - r["sent"] for r in results if r["arrivals"]]
    return {"tokens_per_s": n * tokens / wall, "ttft_p50": statistics.median(ttfts), "ttft_worst": max(ttfts)}


# --- 1. throughput --------------------------------------------------------------------------------

def throughput(systems: dict, limit: InProcess, counts, tokens: int, rounds: int) -> dict:
    table = {}
    for round_ in range(rounds):
        # Each round starts with another system: whatever runs first after a pause runs differently.
        names = list(systems)[round_ % len(systems):] + list(systems)[:round_ % len(systems)]
        for n in counts:
            for name in names:
                base_url, model = systems[name]
                result = asyncio.run(concurrent_streams(base_url, model, n, tokens, offset=round_ * 8))
                table.setdefault((name, n), []).append(result)
                print(f"  round {round_} {name:16s} {n} streams: {result['tokens_per_s']:6.0f} tok/s, "
                      f"TTFT {result['ttft_p50'] * 1000:.0f} ms", file=sys.stderr, flush=True)
            result = limit.batch(n, tokens, offset=round_ * 8)
            table.setdefault(("in-process limit", n), []).append(result)
            print(f"  round {round_} {'in-process limit':16s} {n} streams: {result['tokens_per_s']:6.0f} tok/s, "
                  f"TTFT {result['ttft_p50'] * 1000:.0f} ms", file=sys.stderr, flush=True)
    return {key: {field: statistics.median(r[field] for r in results) for field in results[0]}
            for key, results in table.items()}


# --- 2. mixed load ---------------------------------------------------------------------------------

async def mixed_load(base_url: str, model: str, long_prompts: list) -> dict:
    """Four streams decoding; then the long prompts arrive together (one token asked each): gaps while
    they are prefilled."""
    async with httpx.AsyncClient(timeout=None) as client:
        done = asyncio.Event()
        runners = [asyncio.create_task(_stream_until(client, base_url, model, prompt_of(i), done)) for i in range(4)]
        await asyncio.sleep(2.0)  # all four decoding
        longs = await asyncio.gather(*(chat_stream(client, base_url, model, p, 1) for p in long_prompts))
        done.set()
        arrivals = await asyncio.gather(*runners)
    start, end = min(long["sent"] for long in longs), max(long["arrivals"][0] for long in longs)
    gaps = []
    for times in arrivals:
        during = [t for t in times if start <= t <= end]
        before = [t for t in times if t < start][-1:]
        after = [t for t in times if t > end][:1]
        window = before + during + after
        gaps += [b - a for a, b in itertools.pairwise(window)]
    return {"prefill_s": end - start, "longest_gap_s": max(gaps), "deltas_during": sum(
        len([t for t in times if start <= t <= end]) for times in arrivals)}


async def _stream_until(client, base_url, model, prompt, done: asyncio.Event) -> list:
    arrivals = []
    body = {"model": model, "max_tokens": 100_000, "temperature": 0, "stream": True,
            "messages": [{"role": "user", "content": prompt}]}
    async with client.stream("POST", base_url + "/v1/chat/completions", json=body) as response:
        async for line in response.aiter_lines():
            if content_of(line):
                arrivals.append(time.perf_counter())
            if done.is_set():
                break
    return arrivals


LONG_PROMPT_WORDS = ["the quick brown fox jumps over the lazy dog", "a stitch in time saves nine stitches later",
                     "every good boy deserves fudge and a second helping", "pack my box with five dozen liquor jugs"]


# --- 3. the queue's own cost ----------------------------------------------------------------------

def queue_cost(hearth: HearthSystem, limit: InProcess, n: int = 10) -> dict:
    rows = []
    words = "module request token cache stream worker queue prompt model answer file test build parse"
    with httpx.Client(base_url=hearth.base_url, timeout=300) as http:
        for i in range(n + 1):
            text = limit.text_of(450 + (450 * i) // n, words, salt=f"Prompt {i} {time.time()}:")
            body = {"model": BABBLER, "max_tokens": 200, "temperature": 0, "stream": True,
                    "messages": [{"role": "user", "content": text}]}
            sent_wall, sent = time.time(), time.perf_counter()
            arrivals, job_id = [], None
            with http.stream("POST", "/v1/messages", json=body) as response:
                for line in response.iter_lines():
                    if line.startswith("data: ") and job_id is None:
                        job_id = json.loads(line[6:])["message"]["id"].removeprefix("msg_")
                    if line == "event: content_block_delta":
                        arrivals.append(time.perf_counter())
            first_wall = sent_wall + (arrivals[0] - sent)
            job = Job.fetch(job_id, connection=hearth.rq)
            started = json.loads(hearth.rq.xrange(f"hearth:events:{job_id}", count=1)[0][1][b"e"])["data"]
            direct = limit.stream(limit.tokens(text), 200)
            if i == 0:
                continue  # warm-up
            timing = started["timing"]
            rows.append({
                "ttft": arrivals[0] - sent, "direct_ttft": direct["ttft"],
                "intake": job.enqueued_at.timestamp() - sent_wall,
                "to_worker": timing["dequeued"] - job.enqueued_at.timestamp(),
                "admission": timing["admitted"] - timing["dequeued"],
                "prefill": timing["prefilled"] - timing["admitted"],
                "first_token_and_relay": first_wall - timing["prefilled"],
                # Decode time per token, first delta to last (a delta may carry several tokens).
                "per_token": (arrivals[-1] - arrivals[0]) / (200 - 1),
                "direct_per_token": direct["per_token"],
                "prompt_tokens": started["input_tokens"] + started["cache_read_input_tokens"],
            })
    return {"rows": rows}


# --- 4. many streams through one API ----------------------------------------------------------------

def api_relay_delay(hearth: HearthSystem, streams: int, tokens: int) -> dict:
    published = {}
    subscriber = Redis.from_url(hearth.redis.url).pubsub()
    subscriber.psubscribe("hearth:live:*")
    stop = threading.Event()

    def listen():
        while not stop.is_set():
            message = subscriber.get_message(timeout=0.1)
            if message and message["type"] == "pmessage":
                job_id = message["channel"].decode().rsplit(":", 1)[1]
                published[(job_id, json.loads(message["data"])["seq"])] = time.perf_counter()

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    received = {}

    async def one(client, i):
        body = {"model": BABBLER, "max_tokens": tokens, "temperature": 0, "stream": True,
                "messages": [{"role": "user", "content": prompt_of(i)}]}
        job_id, seq = None, None
        async with client.stream("POST", hearth.base_url + "/v1/messages", json=body) as response:
            async for line in response.aiter_lines():
                if line.startswith("id: "):
                    seq = int(line[4:])
                elif line.startswith("data: ") and job_id is None:
                    job_id = json.loads(line[6:])["message"]["id"].removeprefix("msg_")
                elif line == "event: content_block_delta" and seq is not None:
                    pass
                elif line == "" and seq is not None:
                    received[(job_id, seq)] = time.perf_counter()
                    seq = None

    async def main():
        async with httpx.AsyncClient(timeout=None, limits=httpx.Limits(max_connections=streams + 8)) as client:
            await asyncio.gather(*[one(client, i) for i in range(streams)])

    asyncio.run(main())
    stop.set()
    listener.join()
    delays = [received[key] - published[key] for key in received if key in published]
    return {"frames": len(delays), "p50": pct(delays, 0.5), "p99": pct(delays, 0.99), "worst": max(delays)}


# --- report -----------------------------------------------------------------------------------------

def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--long-prompt", type=int, default=20000, help="tokens of the prompt arriving mid-load")
    parser.add_argument("--long-prompts", type=int, default=1, choices=range(1, len(LONG_PROMPT_WORDS) + 1),
                        help="how many such prompts arrive together")
    parser.add_argument("--many", type=int, default=64)
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: throughput,mixed,queue,many")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))

    with tempfile.TemporaryDirectory() as workdir:
        workdir = Path(workdir)
        babbler = build_babbler(workdir / "babbler")
        limit = InProcess(babbler)
        batched = HearthSystem(workdir, babbler, "batched")
        one_slot = HearthSystem(workdir, babbler, "one-slot", HEARTH_MAX_BATCH="1")
        peer = MlxLmServer(workdir, babbler)
        systems = {"hearth batched": (batched.base_url, BABBLER), "hearth one slot": (one_slot.base_url, BABBLER),
                   "mlx_lm.server": (peer.base_url, str(babbler))}
        try:
            for base_url, model in systems.values():  # warm kernels and connections
                asyncio.run(concurrent_streams(base_url, model, 2, 16, offset=100))
            for n in (1, 4, 8):
                limit.batch(n, 16, offset=100)  # MLX builds kernels per batch size
            results = {}
            if "throughput" not in skip:
                print("throughput", file=sys.stderr)
                results["throughput"] = throughput(systems, limit, (1, 4, 8), args.tokens, args.rounds)
            if "queue" not in skip:
                print("queue cost", file=sys.stderr)
                results["queue"] = queue_cost(batched, limit)
            if "many" not in skip:
                print("many streams", file=sys.stderr)
                results["many"] = api_relay_delay(batched, args.many, min(args.tokens, 200))
            if "mixed" not in skip:
                # Texts of their own: prompts sharing a prefix would wait for one another's prefill.
                long_prompts = [limit.text_of(args.long_prompt, words) for words in LONG_PROMPT_WORDS[:args.long_prompts]]
                results["mixed"] = {}
                for name in ("hearth batched", "mlx_lm.server"):
                    print(f"mixed load: {name}", file=sys.stderr)
                    results["mixed"][name] = asyncio.run(mixed_load(*systems[name], long_prompts))
                results["mixed_chunk"] = limit.longest_prefill_chunk(limit.tokens(long_prompts[0]))
                results["mixed_prompt_tokens"] = len(limit.tokens(long_prompts[0]))
                results["mixed_prompts"] = len(long_prompts)
        finally:
            for system in (batched, one_slot, peer):
                system.stop()
    report(results, args)


def report(results: dict, args):
    if "throughput" in results:
        table = results["throughput"]
        print(f"1. Throughput: aggregate tokens/s ({args.tokens} tokens a stream, greedy, babbler; "
              f"median of {args.rounds} rounds)")
        print(f"   {'streams':>7s} {'hearth batched':>15s} {'one slot':>9s} {'mlx_lm.server':>14s} "
              f"{'in-process':>11s} {'vs server':>10s} {'vs limit':>9s} {'TTFT p50/worst ms (batched)':>28s}")
        for n in (1, 4, 8):
            b, o, s, lim = (table[(name, n)] for name in ("hearth batched", "hearth one slot", "mlx_lm.server",
                                                           "in-process limit"))
            print(f"   {n:7d} {b['tokens_per_s']:15.0f} {o['tokens_per_s']:9.0f} {s['tokens_per_s']:14.0f} "
                  f"{lim['tokens_per_s']:11.0f} {b['tokens_per_s'] / s['tokens_per_s']:9.2f}x "
                  f"{b['tokens_per_s'] / lim['tokens_per_s']:8.2f}x "
                  f"{b['ttft_p50'] * 1000:16.0f} / {b['ttft_worst'] * 1000:.0f}")
        print("   TTFT p50 ms at 1/4/8 streams: one slot "
              + " / ".join(f"{table[('hearth one slot', n)]['ttft_p50'] * 1000:.0f}" for n in (1, 4, 8))
              + ", mlx_lm.server " + " / ".join(f"{table[('mlx_lm.server', n)]['ttft_p50'] * 1000:.0f}" for n in (1, 4, 8))
              + ", in-process " + " / ".join(f"{table[('in-process limit', n)]['ttft_p50'] * 1000:.0f}" for n in (1, 4, 8)))
        single = table[("hearth batched", 1)]["tokens_per_s"] / table[("hearth one slot", 1)]["tokens_per_s"]
        print(f"   a single stream, batched over one slot: {single:.2f}x")
    if "mixed" in results:
        print(f"2. Mixed load: four streams decoding while {results['mixed_prompts']} prompt(s) of "
              f"{results['mixed_prompt_tokens']} tokens arrive together")
        for name, r in results["mixed"].items():
            print(f"   {name:15s} prefill {r['prefill_s']:6.1f} s; longest gap between two deltas of the four "
                  f"{r['longest_gap_s'] * 1000:7.0f} ms; {r['deltas_during']} deltas received meanwhile")
        chunk = results["mixed_chunk"]
        print(f"   in this process, that prompt's longest prefill chunk ({chunk['tokens']} tokens) takes "
              f"{chunk['longest_s'] * 1000:.0f} ms: Hearth's longest gap is {results['mixed']['hearth batched']['longest_gap_s'] / chunk['longest_s']:.2f} chunks")
    if "queue" in results:
        rows = results["queue"]["rows"]
        extra = [r["ttft"] - r["direct_ttft"] for r in rows]
        print(f"3. The queue's own cost for one request ({len(rows)} prompts of "
              f"{min(r['prompt_tokens'] for r in rows)}-{max(r['prompt_tokens'] for r in rows)} tokens)")
        print(f"   TTFT through Hearth minus stream_generate in-process: median {statistics.median(extra) * 1000:.1f} ms, "
              f"worst {max(extra) * 1000:.1f} ms (Hearth median {statistics.median(r['ttft'] for r in rows) * 1000:.0f} ms, "
              f"direct {statistics.median(r['direct_ttft'] for r in rows) * 1000:.0f} ms)")
        for part in ("intake", "to_worker", "admission", "prefill", "first_token_and_relay"):
            print(f"   {part:22s} median {statistics.median(r[part] for r in rows) * 1000:7.1f} ms")
        hearth_step = statistics.median(r["per_token"] for r in rows)
        direct_step = statistics.median(r["direct_per_token"] for r in rows)
        print(f"   decode speed through Hearth over direct: {direct_step / hearth_step:.2f}x "
              f"({hearth_step * 1000:.2f} ms a token vs {direct_step * 1000:.2f} ms)")
    if "many" in results:
        r = results["many"]
        print(f"4. {args.many} streams through one API process: delay from a delta's publication in Redis to its "
              f"SSE frame at the client over {r['frames']} frames: p50 {r['p50'] * 1000:.1f} ms, "
              f"p99 {r['p99'] * 1000:.1f} ms, worst {r['worst'] * 1000:.1f} ms")


if __name__ == "__main__":
    main()
