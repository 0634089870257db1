"""First-request benchmark: time to first token of the very first request after start, against the second.

    python bench/first_request.py [--rounds 3] [--prompt-chars 6000]

Each round starts a fresh system, waits until it reports ready, then sends
two streamed requests one after the other, on the bundled model, with
prompts of the same length and different text (so the second gains nothing
from the prompt cache, only from whatever the first left warm). Side by side,
started afresh each round:

- hearth: a private redis-server, `hearth worker` and `hearth api` (what
  `hearth up` runs); the worker builds MLX's kernels at start, through the
  path requests take;
- mlx_lm.server: the peer, on the same model directory.

Prints each round's TTFTs and the median first / second ratio. The target:
Hearth's first request within 2x of its second.
"""

import argparse
from datetime import datetime
from pathlib import Path
import statistics
import sys
import tempfile
import time

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from claude_code_trace import Text
from hearth_system import REPO, HearthSystem, MlxLmServer

from scripts.build_babbler import build_babbler

MODEL = REPO / "models" / "hearth-tiny"


def anthropic_ttft(base_url: str, prompt: str) -> float:
    body = {"model": "claude-opus-4-6", "max_tokens": 8, "temperature": 0, "stream": True,
            "messages": [{"role": "user", "content": prompt}]}
    started = time.perf_counter()
    with httpx.stream("POST", base_url + "/v1/messages", json=body, timeout=600) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if line == "event: content_block_delta":
                return time.perf_counter() - started
    raise RuntimeError("the stream ended without content")


def openai_ttft(base_url: str, prompt: str) -> float:
    body = {"model": str(MODEL), "max_tokens": 8, "temperature": 0, "stream": True,
            "messages": [{"role": "user", "content": prompt}]}
    started = time.perf_counter()
    with httpx.stream("POST", base_url + "/v1/chat/completions", json=body, timeout=600) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if line.startswith("data: {") and ('"content":' in line or '"reasoning":' in line):
                return time.perf_counter() - started
    raise RuntimeError("the stream ended without content")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--prompt-chars", type=int, default=6000)
    args = parser.parse_args()
    text = Text(seed=7)
    ratios = {"hearth": [], "mlx_lm.server": []}
    with tempfile.TemporaryDirectory(prefix="hearth-bench-first-") as tmp:
        workdir = Path(tmp)
        babbler = build_babbler(workdir / "babbler")
        print(f"First request after start, {datetime.now():%Y-%m-%d %H:%M}: TTFT of two streamed requests "
              f"({args.prompt_chars} chars of prompt each, different text; bundled model), fresh start each round")
        for round_number in range(args.rounds):
            for name in ratios:
                system = (HearthSystem(workdir, babbler, f"hearth-{round_number}") if name == "hearth"
                          else MlxLmServer(workdir, MODEL))
                ttft = anthropic_ttft if name == "hearth" else openai_ttft
                try:
                    first = ttft(system.base_url, text.take(args.prompt_chars))
                    second = ttft(system.base_url, text.take(args.prompt_chars))
                finally:
                    system.stop()
                ratios[name].append(first / second)
                print(f"  round {round_number + 1} {name:>14}: first {first * 1000:7.1f} ms, "
                      f"second {second * 1000:7.1f} ms, first / second {first / second:.2f}x", flush=True)
    for name, values in ratios.items():
        print(f"  {name:>14}: median first / second = {statistics.median(values):.2f}x (target for hearth: <= 2x)")


if __name__ == "__main__":
    main()
