"""Prompt-cache benchmark: Hearth vs mlx-lm's own server vs no cache, on one trace.

    python bench/prompt_cache.py [--model models/hearth-tiny] [--sample-every 4]

Replays a Claude Code-shaped trace (bench/claude_code_trace.py: >= 16K-token
static prefix, billing nonce per request, 20 main turns, subagents, haiku side
calls, a mid-history system message, a worker restart halfway) three ways in
one run, each request with max_tokens=1 so time to first token is prefill:

- Hearth: the worker's real path (request parser, chat template, Engine with
  its prompt cache; the restart saves and reloads the cache from disk);
- mlx-lm's server (`mlx_lm.server --prompt-cache-bytes`, same model and byte
  budget; the restart is a process restart), over HTTP;
- no cache: Hearth's path with a zero budget (timed on a sample of requests).

The byte budget holds about three full prompts. Prints, per system: tokens
prefilled / theoretical minimum, peak cache memory, and mean time to first
token after the first request as a ratio to no cache. Then, on a stable
single conversation (no nonce, no restart, ample budget), Hearth's warm time
to first token over mlx-lm server's.
"""

import argparse
import json
from pathlib import Path
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from claude_code_trace import claude_code_trace, stable_conversation

from api.anthropic_request import chat_messages, chat_tools, parse_messages_request
from api.models import ModelRouter
from hearth.settings import BUNDLED_MODEL, Settings
from workers.engine import Engine
from workers.sampling import Sampling


class HearthRunner:
    def __init__(self, model: str, budget: int, cache_dir: str):
        self.args = (model, budget, cache_dir)
        self.router = ModelRouter(Settings(model=model))
        self.engine = Engine(*self.args)
        self.peak = 0

    def run(self, body: dict):
        request, _ = parse_messages_request(body, self.router)
        started = time.perf_counter()
        prompt = self.engine.render(request)
        batch = self.engine.batch(1, Settings().prefill_chunk)  # as the worker's scheduler runs one sequence
        batch.add("bench", prompt.tokens, Sampling(temperature=0.0), 1, prompt.static_tokens)
        reused, ttft = 0, None
        while ttft is None:
            for output in batch.step():
                reused = output.reused if output.reused is not None else reused
                if output.token is not None:
                    ttft = time.perf_counter() - started
        self.peak = max(self.peak, self.engine.prompt_cache.index.peak_nbytes)
        return prompt.tokens, len(prompt.tokens) - reused, ttft

    def restart(self):
        self.engine.save_cache()
        self.engine = Engine(*self.args)

    def stop(self):
        pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MlxLmServerRunner:
    def __init__(self, model: str, budget: int, log_dir: Path, label: str):
        self.model = model
        self.budget = budget
        self.log = log_dir / f"mlx_lm_server-{label}.log"
        self.process = None
        self.start()

    def start(self):
        self.port = free_port()
        command = [sys.executable, str(Path(__file__).parent / "mlx_lm_server_probe.py"), "--model", self.model,
                   "--port", str(self.port), "--prompt-cache-bytes", str(self.budget)]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=open(self.log, "ab"))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                httpx.get(f"http://127.0.0.1:{self.port}/v1/models", timeout=1)
                return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError("mlx_lm.server did not start; see " + str(self.log))

    def run(self, body: dict):
        # mlx-lm's server has no notion of the billing header: the nonce stays in the system prompt.
        system = "\n\n".join(b["text"] for b in body["system"]) if isinstance(body["system"], list) else body["system"]
        messages = [{"role": "system", "content": system}] + chat_messages(body["messages"])
        for message in messages:
            for call in message.get("tool_calls", []):
                call["function"]["arguments"] = json.dumps(call["function"]["arguments"])
        payload = {"model": self.model, "messages": messages, "max_tokens": 1, "temperature": 0.0}
        if body.get("tools"):
            payload["tools"] = chat_tools(body["tools"])
        started = time.perf_counter()
        response = httpx.post(f"http://127.0.0.1:{self.port}/v1/chat/completions", json=payload, timeout=600)
        ttft = time.perf_counter() - started
        response.raise_for_status()
        usage = response.json()["usage"]
        cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
        return None, usage["prompt_tokens"] - cached, ttft

    @property
    def peak(self) -> int:
        sizes = [int(n) for n in re.findall(r"PROBE cache_bytes=(\d+);", self.log.read_text())]
        return max(sizes, default=0)

    def restart(self):
        self.stop()
        self.start()

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)


def theoretical_minimum(prompts: list) -> int:
    """Each prompt's tokens not shared, as a prefix, with any earlier prompt; at least one each."""
    total, seen = 0, []
    for tokens in prompts:
        array = np.array(tokens)
        best = 0
        for earlier in seen:
            n = min(len(earlier), len(array))
            diverge = np.nonzero(earlier[:n] != array[:n])[0]
            best = max(best, diverge[0] if len(diverge) else n)
        total += max(1, len(tokens) - best)
        seen.append(array)
    return total


def replay(runner, trace, sample=None, label=""):
    prompts, prefilled, ttfts = [], 0, {}
    for i, item in enumerate(trace):
        if item.restart_before:
            runner.restart()
        if sample is not None and i not in sample:
            continue
        tokens, filled, ttft = runner.run(item.body)
        prompts.append(tokens)
        prefilled += filled
        ttfts[i] = ttft
        print(f"  {label} {i:2d} {item.kind:8s} prefilled {filled:6d}  ttft {ttft:6.2f}s", file=sys.stderr, flush=True)
    return prompts, prefilled, ttfts


def mean_over(ttfts: dict, indexes) -> float:
    return statistics.mean(ttfts[i] for i in indexes)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=BUNDLED_MODEL)
    parser.add_argument("--sample-every", type=int, default=5, help="no-cache timing: every Nth request")
    parser.add_argument("--main-turns", type=int, default=20)
    parser.add_argument("--stable-turns", type=int, default=6)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="hearth-bench-"))

    trace = claude_code_trace(main_turns=args.main_turns)
    kinds = [t.kind for t in trace]
    hearth = HearthRunner(args.model, 0, "")
    first = hearth.run(trace[0].body)[0]
    per_token = 2 * len(hearth.engine.model.layers) * hearth.engine.model.args.num_key_value_heads \
        * hearth.engine.model.args.head_dim * 4  # K and V, float32
    budget = 3 * len(first) * per_token
    sample = list(range(1, len(trace), args.sample_every))

    print(f"trace: {len(trace)} requests ({kinds.count('main')} main turns, {kinds.count('subagent')} subagent, "
          f"{kinds.count('haiku')} haiku), first prompt {len(first)} tokens; budget {budget / 1e6:.1f} MB",
          file=sys.stderr)
    print("no cache (sampled)", file=sys.stderr)
    _, _, none_ttft = replay(hearth, trace, sample=set(sample), label="none")

    print("hearth", file=sys.stderr)
    runner = HearthRunner(args.model, budget, str(work / "hearth-cache"))
    prompts, hearth_prefilled, hearth_ttft = replay(runner, trace, label="hearth")
    hearth_peak = runner.peak
    minimum = theoretical_minimum(prompts)
    no_cache_prefilled = sum(len(p) for p in prompts)

    print("mlx-lm server", file=sys.stderr)
    server = MlxLmServerRunner(args.model, budget, work, "trace")
    try:
        _, server_prefilled, server_ttft = replay(server, trace, label="mlx-lm")
        server_peak = server.peak
    finally:
        server.stop()

    print("stable conversation", file=sys.stderr)
    stable = stable_conversation(turns=args.stable_turns)
    ample = 100 * budget
    _, _, stable_hearth = replay(HearthRunner(args.model, ample, ""), stable, label="hearth")
    stable_server_runner = MlxLmServerRunner(args.model, ample, work, "stable")
    try:
        _, _, stable_server = replay(stable_server_runner, stable, label="mlx-lm")
    finally:
        stable_server_runner.stop()
    warm = range(1, len(stable))

    none_mean = mean_over(none_ttft, sample)
    print(f"\nClaude Code trace: {len(trace)} requests, {no_cache_prefilled} prompt tokens, "
          f"theoretical minimum {minimum} prefilled; cache budget {budget / 1e6:.1f} MB (~3 prompts)")
    print(f"{'system':16s} {'prefilled/min':>14s} {'peak cache MB':>14s} {'TTFT/no-cache':>14s}")
    rows = [("hearth", hearth_prefilled, hearth_peak, mean_over(hearth_ttft, sample)),
            ("mlx-lm server", server_prefilled, server_peak, mean_over(server_ttft, sample)),
            ("no cache", no_cache_prefilled, 0, none_mean)]
    for name, prefilled, peak, ttft in rows:
        print(f"{name:16s} {prefilled / minimum:14.2f} {peak / 1e6:14.1f} {ttft / none_mean:14.3f}")
    print(f"\nStable conversation ({len(stable)} turns, no nonce, no restart, ample budget): "
          f"Hearth warm TTFT / mlx-lm server warm TTFT = "
          f"{mean_over(stable_hearth, warm) / mean_over(stable_server, warm):.2f}")


if __name__ == "__main__":
    main()
