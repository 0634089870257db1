"""Claude Code-sized prompts for the bundled model: its manners must hold deep in a long context.

Claude Code's requests are not the short conversations the model learns its
manners on: a long system prompt, two dozen tools with long descriptions
(~16K tokens of them), a `<system-reminder>` before the user's words and a
system turn after them (agent types, skills), some 25K tokens in all. A model
that only saw short prompts may think on and on there, or copy the tools' JSON.

`claude_code_shape()` gives a conversation that shape: the user's request
and the answer stay; around them go Claude Code's own tool schemas
(tests/claude_code_tools.json) and paragraphs of `models/tokenizer_corpus.txt`
as descriptions, system prompt, reminder and trailing system turn. The
training conversations take their filler from the corpus's first four
fifths, the held-out ones (scripts/evaluate_tiny_model.py) from the last
fifth; paragraphs holding held-out material are left out of both.
"""

import dataclasses
import functools
import json
from pathlib import Path
import random

import pretraining_corpus

from api.anthropic_request import chat_tools

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO / "models" / "tokenizer_corpus.txt"
CLAUDE_CODE_TOOL_LIST = REPO / "tests" / "claude_code_tools.json"
# Characters of filler: prompts of about 1.5K to 4.3K tokens, as long as two cores can train on.
SYSTEM_CHARS, REMINDER_CHARS, AFTER_CHARS, DESCRIPTION_CHARS = (800, 2500), (100, 800), (200, 1500), (100, 400)
TOOL_COUNT = (3, 8)


def filler(held_out=False) -> list[str]:
    """The corpus's distinct paragraphs with nothing held out in them: the first four fifths, or the last fifth."""
    holds_held_out = pretraining_corpus.held_out_matcher()
    text = CORPUS.read_text(encoding="utf-8")
    paragraphs = [p for p in dict.fromkeys(p.strip("\n") for p in text.split("\n\n"))
                  if p.strip() and not holds_held_out(p)]
    split = len(paragraphs) * 4 // 5
    return paragraphs[split:] if held_out else paragraphs[:split]


@functools.cache
def claude_code_tools() -> list[dict]:
    """Claude Code's own tool schemas (its descriptions dropped), in the chat template's shape,
    as the API makes them (read once: every lengthened conversation draws from them)."""
    return chat_tools(json.loads(CLAUDE_CODE_TOOL_LIST.read_text(encoding="utf-8")))


def _text(rng, paragraphs, chars) -> str:
    """Consecutive paragraphs from a random place, about `chars` (a (low, high) range) long."""
    target, start = rng.randrange(*chars), rng.randrange(len(paragraphs))
    picked = []
    while sum(map(len, picked)) < target:
        picked.append(paragraphs[(start + len(picked)) % len(paragraphs)])
    return "\n\n".join(picked)


def claude_code_shape(rng: random.Random, messages: list, tools: list | None, paragraphs: list[str]):
    """(system, messages, tools): a conversation as Claude Code would send it, its words and turns kept."""
    tools = [dict(t, function=dict(t["function"], description=_text(rng, paragraphs, DESCRIPTION_CHARS)))
             for t in rng.sample(claude_code_tools(), rng.randrange(*TOOL_COUNT))] + (tools or [])
    rng.shuffle(tools)
    system = "You are an interactive agent that helps users with software engineering tasks.\n\n" + \
        _text(rng, paragraphs, SYSTEM_CHARS)
    reminder = f"<system-reminder>\n{_text(rng, paragraphs, REMINDER_CHARS)}\n</system-reminder>\n\n"
    messages = [dict(messages[0], content=reminder + messages[0]["content"]), *messages[1:]]
    if rng.random() < 0.6:
        messages.insert(1, {"role": "system", "content": _text(rng, paragraphs, AFTER_CHARS)})
    return system, messages, tools


def lengthen_some(examples: list[dict], share: float, seed: int) -> list[dict]:
    """`examples` (chat_examples() conversations) with about `share` of them made Claude Code-sized."""
    rng, paragraphs = random.Random(seed), filler()
    lengthened = []
    for example in examples:
        if rng.random() < share:
            turns = [m for m in example["messages"] if m["role"] != "system"]
            system, turns, tools = claude_code_shape(rng, turns, example["tools"], paragraphs)
            # As Hearth renders a system prompt beside tools (workers/engine.py): an empty system turn leads.
            leading = [{"role": "system", "content": ""}, {"role": "system", "content": system}]
            example = dict(example, messages=leading + turns, tools=tools)
        lengthened.append(example)
    return lengthened


def long_cases(cases: list, seed: int) -> list:
    """Held-out cases (tiny_model_data.held_out_cases()) made Claude Code-sized, with held-out filler."""
    rng, paragraphs = random.Random(seed), filler(held_out=True)
    long = []
    for case in cases:
        system, messages, tools = claude_code_shape(rng, case.messages(), case.tools, paragraphs)
        long.append(dataclasses.replace(case, system=system, turns=messages, tools=tools))
    return long
