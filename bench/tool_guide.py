"""What holding tool calls to their grammar costs the worker's decoding (workers/tool_guide.py).

    python bench/tool_guide.py [--streams 1,8] [--tokens 200] [--rounds 3]

On the babbler (the bundled model's shape and cost per token; it never stops
by itself), greedy, Claude Code 2.1.332's own tools offered
(tests/claude_code_tools.json), through the worker's batch (workers/batch.py),
side by side in one run, alternating, the median of the rounds:

1. Outside a call (what almost every token of an answer is): --streams
   sequences decoding --tokens tokens each, with a guide (it reads each
   token, masks nothing) over without one: the guide's cost when the model
   writes text.
2. Inside a call: the same, with `<tool_call>` pushed into every sequence
   first, so every token is masked by llguidance against the tools'
   grammar, over the unguided sequences after the same push.
3. No tools offered: the same sequences, their sampler masking `<tool_call>`
   (as every request that offers no tools has it) over unmasked.
4. Compiling the grammar of Claude Code's tools, once per tool set (the
   first request offering them), against one decode step of one sequence.
"""

import argparse
import json
from pathlib import Path
import statistics
import sys
import tempfile
import time

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from api.anthropic_request import chat_tools
from scripts.build_babbler import build_babbler
from workers.engine import Engine
from workers.sampling import Sampling
from workers.tool_guide import ToolGuides

REPO = Path(__file__).resolve().parent.parent
TOOLS = chat_tools(json.loads((REPO / "tests" / "claude_code_tools.json").read_text()))


def step_until_all_decode(batch):
    """Prefill steps are not timed: step until a step yields only tokens."""
    prefilling = True
    while prefilling:
        prefilling = any(output.token is None for output in batch.step())


def decode(engine, streams: int, tokens: int, new_guide, in_call: bool, sampling=Sampling(temperature=0.0)) -> float:
    """Tokens per second of `streams` sequences decoding `tokens` tokens each, each held by `new_guide()`."""
    batch = engine.batch(max(streams, 8), 512)
    for i in range(streams):
        guide = new_guide()
        batch.add(str(i), engine.encode(f"Stream {i}: tell me about the tide, at length."), sampling,
                  tokens + 2, guide=guide)
    step_until_all_decode(batch)
    if in_call:
        for i in range(streams):
            batch.extend(str(i), engine.encode("<tool_call>"), tokens)
        step_until_all_decode(batch)
    produced, started = 0, time.perf_counter()
    while produced < streams * tokens and len(batch):
        produced += sum(o.token is not None for o in batch.step())
    elapsed = time.perf_counter() - started
    for i in range(streams):
        if str(i) in batch:
            batch.remove(str(i))
    return produced / elapsed


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", default="1,8")
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    engine = Engine(str(build_babbler(Path(tempfile.mkdtemp()) / "babbler")), cache_bytes=0)
    print(f"babbler, greedy, {len(TOOLS)} Claude Code tools offered, {args.tokens} tokens a stream, "
          f"median of {args.rounds} rounds (guided / unguided tokens per second)")
    def tools_guide():
        return engine.tool_guides.guide(TOOLS, in_thinking=False)

    def no_guide():
        return None

    greedy, no_tools = Sampling(temperature=0.0), Sampling(temperature=0.0, may_call_tools=False)
    cases = [("outside a call", tools_guide, greedy, False), ("inside a call", tools_guide, greedy, True),
             ("no tools offered", no_guide, no_tools, False)]
    for label, new_guide, sampling, in_call in cases:
        for streams in [int(s) for s in args.streams.split(",")]:
            ratios, rates = [], []
            for _ in range(args.rounds):
                unguided = decode(engine, streams, args.tokens, no_guide, in_call)
                guided = decode(engine, streams, args.tokens, new_guide, in_call, sampling)
                ratios.append(guided / unguided)
                rates.append((guided, unguided))
            guided, unguided = (statistics.median(r[k] for r in rates) for k in (0, 1))
            print(f"{label:16}, {streams} stream(s): "
                  f"{guided:.0f} / {unguided:.0f} tok/s = {statistics.median(ratios):.2f}x")
    compile_times = []
    for _ in range(args.rounds):
        guides = ToolGuides(engine.tokenizer, engine.tool_format, engine.model.args.vocab_size)
        started = time.perf_counter()
        guides.guide(TOOLS, in_thinking=False)
        compile_times.append(time.perf_counter() - started)
    step = 1 / decode(engine, 1, args.tokens, no_guide, False)
    compiled = statistics.median(compile_times)
    print(f"compiling the grammar of Claude Code's {len(TOOLS)} tools: {compiled * 1000:.1f} ms "
          f"= {compiled / step:.1f} decode steps of one sequence ({step * 1000:.1f} ms)")


if __name__ == "__main__":
    main()
