"""Tool calls held to their grammar while decoding (workers/tool_guide.py), in both kinds of batch.

The babbler (the bundled model's shape, random weights) writes noise: left
alone after `<tool_call>` it never writes a call. Guided, whatever it samples
is a call to an offered tool with its required arguments, and the stream
parser makes it a tool_use block.
"""

import json

import pytest

from hearth.settings import BUNDLED_MODEL
from workers.batch import Sampling
from workers.engine import Engine
from workers.stream_parser import BlockStart, StreamParser

# Bounded values only (an enum, an integer): even noise must close them within a few tokens.
TOOLS = [
    {"type": "function", "function": {"name": "Sleep", "description": "Wait.", "parameters": {
        "type": "object", "properties": {"seconds": {"type": "integer"}}, "required": ["seconds"]}}},
    {"type": "function", "function": {"name": "Paint", "description": "Paint it.", "parameters": {
        "type": "object", "properties": {"color": {"type": "string", "enum": ["red", "green"]},
                                          "coats": {"type": "integer"}}, "required": ["color"]}}},
]


@pytest.fixture(scope="module")
def babbler(tmp_path_factory):
    from scripts.build_babbler import build_babbler

    return Engine(str(build_babbler(tmp_path_factory.mktemp("babbler"))), cache_bytes=1 << 28)


@pytest.fixture(scope="module")
def engine():
    return Engine(BUNDLED_MODEL, cache_bytes=1 << 28)


def call_after_opening(engine, guided: bool, seed_text: str, max_tokens: int = 120) -> str:
    """What the model writes after `<tool_call>` is pushed into its sequence (sampled, temperature 1)."""
    batch = engine.batch(4, 64)
    guide = engine.tool_guides.guide(TOOLS, in_thinking=False) if guided else None
    batch.add("a", engine.encode(seed_text), Sampling(temperature=1.0), 3, guide=guide)
    while "a" in batch and not [o for o in batch.step() if o.key == "a" and o.token is not None]:
        pass
    batch.extend("a", engine.encode("<tool_call>"), max_tokens)
    written = []
    while "a" in batch and not (guide and not guide.in_call and written):
        written += [o.token for o in batch.step() if o.key == "a" and o.token is not None and o.finish != "stop"]
    if "a" in batch:
        batch.remove("a")
    return engine.tokenizer.decode(written)


def parsed_calls(engine, body: str) -> list:
    parser = StreamParser(tool_format=engine.tool_format, tools=TOOLS)
    events = parser.feed("<tool_call>" + body) + parser.finish()
    return [event.block for event in events if isinstance(event, BlockStart) and event.block["type"] == "tool_use"]


@pytest.mark.parametrize("batchable", [True, False], ids=["batch", "one at a time"])
def test_noise_after_tool_call_becomes_a_call_to_an_offered_tool(babbler, monkeypatch, batchable):
    monkeypatch.setattr(babbler, "batchable", batchable)
    for seed_text in ("list the files", "paint the fence", "wait a little"):
        body = call_after_opening(babbler, guided=True, seed_text=seed_text)
        assert body.endswith("</tool_call>"), body
        call = json.loads(body.removesuffix("</tool_call>"))
        assert call["name"] in ("Sleep", "Paint")
        if call["name"] == "Sleep":
            assert isinstance(call["arguments"]["seconds"], int)
        else:
            assert call["arguments"]["color"] in ("red", "green")
            assert set(call["arguments"]) <= {"color", "coats"}
        [block] = parsed_calls(babbler, body)
        assert block["name"] == call["name"]
    # Unguided, the same noise is no call at all.
    assert not parsed_calls(babbler, call_after_opening(babbler, guided=False, seed_text="list the files"))


def test_a_tool_call_written_while_thinking_is_left_alone(engine):
    guides = engine.tool_guides
    [tool_call] = engine.encode("<tool_call>")
    thinking = guides.guide(TOOLS, in_thinking=True)
    thinking.inserted([tool_call])
    assert not thinking.in_call
    thinking.inserted(engine.encode("\n</think>\n\n<tool_call>"))
    assert thinking.in_call
    answering = guides.guide(TOOLS, in_thinking=False)
    answering.inserted([tool_call])
    assert answering.in_call
    # A resumed job's guide takes in its output so far, and is where the first one was.
    resumed = guides.guide(TOOLS, in_thinking=False)
    resumed.inserted(engine.encode('<tool_call>\n{"name": "Sleep", "arguments": {"seconds": 3}}\n</tool_call>'))
    assert not resumed.in_call


def test_no_tools_no_guide(engine):
    assert engine.tool_guides.guide(None, in_thinking=False) is None
    assert engine.tool_guides.guide([], in_thinking=False) is None
