"""A long cold prompt, and short requests that share only its start (as Claude Code's share its tools).

    python bench/shared_prefix.py [--long-prompt 16000] [--shared 4700] [--short 3] [--rounds 2]

Claude Code's first turn is a long cold prompt; its side requests and subagents share the tools
at its start and little else. Side by side in one run, on the babbler, greedy, through streamed
OpenAI chat completions: the long prompt (one token asked) goes first, and a second later --short
requests whose system prompt is the long one's (--shared tokens), each with a short question of
its own and 32 tokens asked. For Hearth batched and mlx_lm.server: the long prompt's time to its
first token (its prefill) and each short request's (how long it waited, and its own prefill). Its
last token comes later: while a prompt prefills, the streams decoding get a token a chunk. The
limit: a short request alone in this process (stream_generate over its whole prompt, no cache).
Every round has a system prompt of its own, so every round starts cold.
"""

import argparse
import asyncio
from pathlib import Path
import statistics
import sys
import tempfile

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from batching import chat_stream
from hearth_system import BABBLER, HearthSystem, MlxLmServer
from in_process import InProcess

from scripts.build_babbler import build_babbler

SHORT_TOKENS = 32
QUESTIONS = ["List the files here.", "Name this conversation.", "Summarize the task so far.", "Is the build green?",
             "Which test failed?", "What changed?", "Read the README.", "Count the modules."]


async def long_and_short(base_url: str, model: str, system: str, long_text: str, questions: list) -> dict:
    async with httpx.AsyncClient(timeout=None) as client:
        long = asyncio.create_task(chat_stream(client, base_url, model, long_text, 1, system=system))
        await asyncio.sleep(1.0)  # the long prompt is prefilling
        shorts = await asyncio.gather(*(chat_stream(client, base_url, model, q, SHORT_TOKENS, system=system)
                                        for q in questions))
        long = await long
    return {"long_ttft_s": long["arrivals"][0] - long["sent"],
            "short_ttft_s": [s["arrivals"][0] - s["sent"] for s in shorts]}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--long-prompt", type=int, default=16000, help="tokens of the long prompt in all")
    parser.add_argument("--shared", type=int, default=4700, help="tokens of it every request shares (the system prompt)")
    parser.add_argument("--short", type=int, default=3, choices=range(1, len(QUESTIONS) + 1))
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as workdir:
        workdir = Path(workdir)
        babbler = build_babbler(workdir / "babbler")
        limit = InProcess(babbler)
        hearth = HearthSystem(workdir, babbler, "batched")
        peer = MlxLmServer(workdir, babbler)
        systems = {"hearth batched": (hearth.base_url, BABBLER), "mlx_lm.server": (peer.base_url, str(babbler))}
        questions = QUESTIONS[:args.short]
        results = {name: [] for name in systems}
        alone = []
        try:
            for round_ in range(args.rounds):
                system = limit.text_of(args.shared, "Run a shell command and return its output.", salt=f"round {round_}: ")
                long_text = limit.text_of(args.long_prompt - args.shared, "the quick brown fox jumps over the lazy dog")
                names = list(systems)[round_ % 2:] + list(systems)[:round_ % 2]
                for name in names:
                    result = asyncio.run(long_and_short(*systems[name], system, long_text, questions))
                    results[name].append(result)
                    print(f"  round {round_} {name:15s} first token: long {result['long_ttft_s']:6.1f} s, short "
                          + ", ".join(f"{s:.1f}" for s in result["short_ttft_s"]) + " s", file=sys.stderr, flush=True)
                for question in questions:
                    direct = limit.stream(limit.tokens(question, system=system), SHORT_TOKENS)
                    alone.append(direct["ttft"])
                prompt_tokens = len(limit.tokens(long_text, system=system))
        finally:
            hearth.stop()
            peer.stop()

    print(f"A long cold prompt ({prompt_tokens} tokens) and {args.short} short requests sharing its first "
          f"{args.shared} tokens, sent a second later ({SHORT_TOKENS} tokens asked each; babbler, greedy; "
          f"{args.rounds} rounds)")
    limit_s = statistics.median(alone)
    print("   time to first token:")
    print(f"   {'':15s} {'long prompt':>12s} {'short, median':>14s} {'worst':>7s} {'short / long':>13s} "
          f"{'short / alone':>14s}")
    for name, rounds in results.items():
        long = statistics.median(r["long_ttft_s"] for r in rounds)
        short = [s for r in rounds for s in r["short_ttft_s"]]
        print(f"   {name:15s} {long:10.1f} s {statistics.median(short):12.1f} s {max(short):5.1f} s "
              f"{statistics.median(short) / long:12.2f}x {statistics.median(short) / limit_s:13.2f}x")
    print(f"   in-process limit: a short request alone, its whole prompt prefilled: {limit_s:.1f} s (median)")


if __name__ == "__main__":
    main()
