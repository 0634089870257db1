"""Measure the bundled model's manners on requests it was never trained on.

    python scripts/evaluate_tiny_model.py [MODEL_DIR]       # default: models/hearth-tiny
    python scripts/evaluate_tiny_model.py --long            # the same requests, Claude Code-sized
    python scripts/evaluate_tiny_model.py --seed 7 --seed 8 --seed 9   # three draws, each and all together

Greedy, through Hearth's own path: the worker's Engine renders each request
(chat template, tools first) and decodes it in a batch, and the stream parser
turns the output into the content blocks a client receives. The requests are
`tiny_model_data.held_out_cases()`: tool names, parameters, phrasings,
subjects and values that the training data does not contain. For each
thinking mode it prints:

- calls that parse: action requests answered with a tool_use block (a call
  whose JSON parses, whatever tool it names);
- good calls: action requests answered with a parseable call to an offered
  tool carrying every argument that tool requires; and of those requests,
  the share whose call picked the very tool the request was about, the share
  whose call carries the values the request named (copied from the request),
  and the share with both;
- questions calling: plain questions answered with a tool call;
- think tags in the answer: answers that write `<think>` or `</think>` after
  their thinking (the stream parser drops such stray tags; the model should
  not write them);
- thinking-on answers that open with a thinking block, thinking-off answers
  that have none;
- answered: answers with text or a call after any thinking (a reply that is
  all thinking shows the user nothing);
- after a result: each action request again, as a history in which the call
  was made (with an earlier thought or none, as a client sends it back) and
  its result came back; the share that calls a tool again (in a client that
  runs every call, a turn that may never end) and the share answered in words.

Good calls and questions calling come with a 95% interval (Wilson's): a
draw's 40 requests and 20 questions move its figures 2.5 and 5 points each,
so a rate is judged on many draws together (`--seed` repeated).

`--long` puts each request inside a Claude Code-sized prompt
(scripts/long_prompts.py: a long system prompt, Claude Code's tools beside
the offered ones, a reminder before the request and a system turn after it,
1.5K to 4.3K tokens); `--temperature 1` samples, as Claude Code asks.
"""

import argparse
import dataclasses
from dataclasses import dataclass, field
import math
from pathlib import Path
import sys

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import long_prompts
import tiny_model_data

from api.anthropic_request import chat_messages
from hearth.contract import BLOCK_START, BLOCK_STOP, DELTA, Event, GenerationRequest
from hearth.message import MessageAssembler
from workers.engine import Engine
from workers.sampling import Sampling
from workers.stream_parser import BlockDelta, BlockStart, StreamParser

DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "models" / "hearth-tiny"
MAX_TOKENS = 160


@dataclass
class Answer:
    case: tiny_model_data.HeldOutCase
    blocks: list = field(default_factory=list)
    raw: str = ""  # what the model wrote, before the stream parser tidied it

    def calls(self):
        return [b for b in self.blocks if b["type"] == "tool_use"]

    def good_call(self) -> bool:
        """A call to an offered tool with every argument it requires (an empty string is none;
        Claude Code's tools also require numbers, such as Monitor's `timeout_ms`)."""
        offered = {t["function"]["name"]: t["function"]["parameters"].get("required", []) for t in self.case.tools}
        return any(call["name"] in offered
                   and all(call["input"].get(p) not in (None, "") for p in offered[call["name"]])
                   for call in self.calls())

    def expected_call(self) -> bool:
        return any(call["name"] == self.case.expected_tool and call["input"] == self.case.expected_arguments
                   for call in self.calls())

    def expected_tool(self) -> bool:
        return any(call["name"] == self.case.expected_tool for call in self.calls())

    def expected_values(self) -> bool:
        """A call carrying every value the request named, whatever tool and parameter it put them in."""
        return any(all(value in call["input"].values() for value in self.case.expected_arguments.values())
                   for call in self.calls())

    def answered(self) -> bool:
        """Text or a call after any thinking: what a client shows (a reply all thinking shows nothing)."""
        return any(b["type"] == "tool_use" or (b["type"] == "text" and b["text"].strip()) for b in self.blocks)

    def markup_in_answer(self) -> bool:
        """A `<think>` or `</think>` written after thinking (the parser drops it; the model should not write it)."""
        answer = self.raw.partition("</think>")[2] if self.raw.lstrip().startswith("<think>") else self.raw
        return "<think>" in answer or "</think>" in answer


# As a client sends back the turn that called: with no thinking, or thinking in words the
# training data does not hold; and results of a few kinds.
THOUGHTS_BEFORE_THE_CALL = (None, "The user wants me to use the {name} tool. I will call it.",
                            "That needs a tool; calling it now.")
RESULTS = ("{values}", "main.py\nREADME.md", "Exit code 0")


def after_a_result(cases: list) -> list:
    """The action requests of `cases` as histories, through the API's own conversion
    (api/anthropic_request.py): the request's call made, and its result back."""
    histories = []
    for i, case in enumerate(c for c in cases if c.expected_tool):
        thought = THOUGHTS_BEFORE_THE_CALL[i % len(THOUGHTS_BEFORE_THE_CALL)]
        call = {"type": "tool_use", "id": f"toolu_{i}", "name": case.expected_tool, "input": case.expected_arguments}
        said = [{"type": "thinking", "thinking": thought.format(name=case.expected_tool), "signature": "s"}] if thought else []
        result = RESULTS[i // len(THOUGHTS_BEFORE_THE_CALL) % len(RESULTS)].format(
            values="\n".join(case.expected_arguments.values()))
        histories.append(dataclasses.replace(case, turns=chat_messages([
            {"role": "user", "content": case.prompt},
            {"role": "assistant", "content": [*said, call]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call["id"], "content": result}]}])))
    return histories


def _blocks(events) -> list:
    """The parser's events folded into content blocks, as the worker folds a job's result."""
    assembler = MessageAssembler()
    for event in events:
        if isinstance(event, BlockStart):
            assembler.apply(Event(0, BLOCK_START, {"index": event.index, "block": event.block}))
        elif isinstance(event, BlockDelta):
            assembler.apply(Event(0, DELTA, {"index": event.index, "delta": event.delta}))
        else:
            assembler.apply(Event(0, BLOCK_STOP, {"index": event.index}))
    return assembler.blocks


def answer(engine: Engine, cases: list, thinking: bool, max_tokens: int = MAX_TOKENS,
           guided: bool = True, temperature: float = 0.0) -> list[Answer]:
    """Every case answered (greedily unless a `temperature` is given), eight at a time in one batch;
    its tool calls held to their grammar as the worker holds them (workers/tool_guide.py), unless not `guided`."""
    batch = engine.batch(8, 512)
    pending, running, answers = list(enumerate(cases)), {}, [None] * len(cases)
    while pending or running:
        while pending and len(running) < 8:
            i, case = pending.pop(0)
            request = GenerationRequest(model=engine.name, requested_model="tiny", max_tokens=max_tokens,
                                        system=case.system, messages=case.messages(), tools=case.tools,
                                        enable_thinking=thinking)
            prompt = engine.render(request)
            parser = StreamParser(in_thinking=prompt.opens_in_thinking, thinking_enabled=thinking,
                                  tool_format=engine.tool_format, tools=case.tools)
            running[str(i)] = (case, engine.decoder(), parser, [], [])
            guide = engine.tool_guide(request, prompt.opens_in_thinking) if guided else None
            sampling = Sampling(temperature=temperature, may_call_tools=bool(case.tools))
            batch.add(str(i), prompt.tokens, sampling, max_tokens, guide=guide)
        for output in batch.step():
            if output.token is None:
                continue
            case, decoder, parser, events, raw = running[output.key]
            text = "" if output.finish == "stop" else decoder.add(output.token)
            if output.finish:
                text += decoder.flush()
            raw.append(text)
            events += parser.feed(text)
            if output.finish:
                answers[int(output.key)] = Answer(case, _blocks(events + parser.finish()), "".join(raw))
                del running[output.key]
    return answers


def figures(answers: list[Answer], thinking: bool) -> dict:
    actions = [a for a in answers if a.case.expected_tool]
    questions = [a for a in answers if not a.case.expected_tool]
    kinds = [[b["type"] for b in a.blocks] for a in answers]
    good_calls, questions_calling = sum(a.good_call() for a in actions), sum(bool(a.calls()) for a in questions)
    return {
        "parsed_calls": sum(bool(a.calls()) for a in actions) / len(actions),
        "good_calls": good_calls / len(actions),
        "expected_calls": sum(a.expected_call() for a in actions) / len(actions),
        "expected_tools": sum(a.expected_tool() for a in actions) / len(actions),
        "expected_values": sum(a.expected_values() for a in actions) / len(actions),
        "questions_calling": questions_calling / len(questions),
        "answered": sum(a.answered() for a in answers) / len(answers),
        "markup_in_answer": sum(a.markup_in_answer() for a in answers) / len(answers),
        "thinking_as_asked": sum((k[:1] == ["thinking"]) == thinking and (thinking or "thinking" not in k)
                                 for k in kinds) / len(answers),
        "actions": len(actions), "questions": len(questions),
        "good_call_count": good_calls, "questions_calling_count": questions_calling,
    }


def interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson's score interval (95% at z = 1.96) for a share of `successes` in `n`: where the model's
    true rate may lie, given one draw. A draw of 40 requests spans about 20 points; unlike p ± z·se,
    the interval stays within [0, 1] near 0% and 100%."""
    p, z2 = successes / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def _within(successes: int, n: int) -> str:
    low, high = interval(successes, n)
    return f"[{low:.1%}, {high:.1%}]"


def after_result_figures(answers: list[Answer]) -> dict:
    return {"calls_again": sum(bool(a.calls()) for a in answers) / len(answers),
            "in_words": sum(any(b["type"] == "text" and b["text"].strip() for b in a.blocks) and not a.calls()
                            for a in answers) / len(answers),
            "histories": len(answers)}


def held_out(seed: int, long: bool) -> tuple[list, list]:
    """One draw of held-out requests, and each request to act as a history after its result."""
    cases = tiny_model_data.held_out_cases(seed=seed)
    histories = after_a_result(cases)
    if long:
        return long_prompts.long_cases(cases, seed=seed), long_prompts.long_cases(histories, seed=seed)
    return cases, histories


def report(label: str, thinking: bool, answers: list[Answer], after: list[Answer]):
    f, again = figures(answers, thinking), after_result_figures(after)
    print(f"{label}, thinking {'on ' if thinking else 'off'}: calls that parse {f['parsed_calls']:.0%} of {f['actions']}, "
          f"good calls {f['good_calls']:.1%} {_within(f['good_call_count'], f['actions'])} "
          f"(the request's tool {f['expected_tools']:.0%}, its values {f['expected_values']:.0%}, "
          f"both {f['expected_calls']:.0%}), questions calling {f['questions_calling']:.1%} "
          f"of {f['questions']} {_within(f['questions_calling_count'], f['questions'])}, "
          f"think tags in the answer {f['markup_in_answer']:.0%}, "
          f"thinking as asked {f['thinking_as_asked']:.0%}, answered {f['answered']:.0%}")
    print(f"  after a result: calls again {again['calls_again']:.1%} of {again['histories']}, "
          f"answered in words {again['in_words']:.0%}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default=str(DEFAULT_MODEL))
    parser.add_argument("--show", action="store_true", help="print every answer")
    parser.add_argument("--unguided", action="store_true", help="the model alone: tool calls not held to a grammar")
    # Repeated rather than nargs="+", which would swallow the model directory after it.
    parser.add_argument("--seed", type=int, action="append",
                        help="another draw of held-out requests (the same held-out words, other combinations); "
                             "repeated, each draw's figures and then all of them together")
    parser.add_argument("--long", action="store_true",
                        help="the same requests, Claude Code-sized (scripts/long_prompts.py)")
    parser.add_argument("--temperature", type=float, default=0.0, help="sampled, as Claude Code asks (1.0)")
    args = parser.parse_args()
    engine = Engine(args.model, cache_bytes=1 << 26)
    draws = {seed: held_out(seed, args.long) for seed in args.seed or [tiny_model_data.HELD_OUT_SEED]}
    print(f"{args.model}: {sum(len(cases) for cases, _ in draws.values())} held-out requests "
          f"(seed{'s' if len(draws) > 1 else ''} {', '.join(map(str, draws))}{', Claude Code-sized' if args.long else ''}), "
          f"{f'temperature {args.temperature}' if args.temperature else 'greedy'}, at most {MAX_TOKENS} tokens each, "
          f"tool calls {'unguided' if args.unguided else 'guided'}")
    for thinking in (True, False):
        every, every_after = [], []
        for seed, (cases, histories) in draws.items():
            answers = answer(engine, cases, thinking, guided=not args.unguided, temperature=args.temperature)
            after = answer(engine, histories, thinking, guided=not args.unguided, temperature=args.temperature)
            if args.show:
                for a in answers:
                    print(repr(a.case.prompt), [t["function"]["name"] for t in a.case.tools], "->", repr(a.raw))
                for a in after:
                    print("after a result:", repr(a.case.prompt), "->", repr(a.raw))
            report(f"seed {seed}", thinking, answers, after)
            every += answers
            every_after += after
        if len(draws) > 1:
            report(f"all {len(draws)} draws", thinking, every, every_after)


if __name__ == "__main__":
    main()
