"""Tool calls held to their grammar while decoding (workers/tool_guide.py), in both kinds of batch;
none at all when no tools are offered (workers/sampling.py).

The babbler (the bundled model's shape, random weights) writes noise: left
alone after `<tool_call>` it never writes a call. Guided, whatever it samples
is a call to an offered tool with its required arguments, and the stream
parser makes it a tool_use block.
"""

import json

import mlx.core as mx
from mlx_lm.sample_utils import make_sampler
import pytest

from hearth.contract import GenerationRequest
from hearth.settings import BUNDLED_MODEL
from workers.engine import Engine
from workers.sampling import Sampling, never_drawing, sampler_for
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


def greedy(engine, request: GenerationRequest, sampling: Sampling) -> str:
    prompt = engine.render(request)
    batch = engine.batch(4, 64)
    batch.add("a", prompt.tokens, sampling, 80, guide=engine.tool_guide(request, prompt.opens_in_thinking))
    written = []
    while "a" in batch:
        written += [o.token for o in batch.step() if o.key == "a" and o.token is not None and o.finish != "stop"]
    return engine.tokenizer.decode(written)


@pytest.mark.parametrize("thinking", [False, True], ids=["thinking off", "thinking on"])
@pytest.mark.parametrize("batchable", [True, False], ids=["batch", "one at a time"])
def test_offered_no_tools_the_model_writes_no_call(engine, monkeypatch, batchable, thinking):
    """Anthropic's model cannot call a tool nobody offered; asked to act, the bundled model would."""
    monkeypatch.setattr(engine, "batchable", batchable)
    request = GenerationRequest(model="m", requested_model="m", messages=[{"role": "user", "content": "Run ls."}],
                                max_tokens=80, enable_thinking=thinking, temperature=0.0)
    assert engine.tool_guide(request, in_thinking=False) is None
    assert "<tool_call>" in greedy(engine, request, Sampling(temperature=0.0))
    sampling = Sampling.for_request(request)
    assert not sampling.may_call_tools
    answered = greedy(engine, request, sampling)
    assert "<tool_call>" not in answered and answered.rpartition("</think>")[2].strip(), answered


def test_tool_choice_none_or_one_tool_leaves_the_prompt_as_it_was(engine):
    """A turn's tool_choice narrows what may be called, not what the model sees: the prompt, and the
    prompt cache's prefix, are the same; the guide and the sampler hold the answer to the choice."""
    turn = dict(model="m", requested_model="m", messages=[{"role": "user", "content": "Run ls."}], max_tokens=80,
                tools=TOOLS, temperature=0.0)
    choices = {"auto": None, "none": [], "tool": ["Paint"]}
    requests = {name: GenerationRequest(**turn, callable_tools=names) for name, names in choices.items()}
    prompts = [engine.render(request).tokens for request in requests.values()]
    assert prompts[0] == prompts[1] == prompts[2]
    assert not Sampling.for_request(requests["none"]).may_call_tools
    assert engine.tool_guide(requests["none"], in_thinking=False) is None
    assert Sampling.for_request(requests["tool"]).may_call_tools
    assert [t["function"]["name"] for t in requests["tool"].tools_to_call()] == ["Paint"]


def test_a_token_never_drawn_leaves_the_others_their_odds():
    favourite, runner_up, outsider = 0, 1, 2
    logprobs = mx.log(mx.array([[0.9, 0.06, 0.04], [0.9, 0.04, 0.06]]))  # a batch of two, one call
    assert never_drawing(make_sampler(temp=0.0), favourite)(logprobs).tolist() == [runner_up, outsider]
    # Top-p 0.5 of what is left: the runner-up alone (0.6 of it), never the outsider (0.4).
    nucleus = never_drawing(make_sampler(temp=1.0, top_p=0.5), favourite)
    draws = {token for _ in range(50) for token in nucleus(logprobs[:1]).tolist()}
    assert draws == {runner_up}
    # Sequences that sample alike share one sampler, so mlx-lm samples them in one call.
    assert sampler_for(Sampling(0.7, may_call_tools=False), 5) is sampler_for(Sampling(0.7, may_call_tools=False), 5)
    assert sampler_for(Sampling(0.7), 5) is not sampler_for(Sampling(0.7, may_call_tools=False), 5)


def answer(engine, guide, prompt_text: str, max_tokens: int = 150, think_for: int = 0) -> str:
    """What the model writes (sampled) for a prompt; after `think_for` tokens, its thinking is closed
    for it, as a spent budget closes it."""
    batch = engine.batch(4, 64)
    batch.add("a", engine.encode(prompt_text), Sampling(temperature=1.0), max_tokens, guide=guide)
    written = []
    while "a" in batch:
        written += [o.token for o in batch.step() if o.key == "a" and o.token is not None and o.finish != "stop"]
        if think_for and len(written) == think_for:
            forced = engine.encode("\n</think>\n\n")
            written += forced
            batch.extend("a", forced, max_tokens)
        if guide is not None and written and not guide.in_call and "</tool_call>" in engine.tokenizer.decode(written):
            batch.remove("a")
    return engine.tokenizer.decode(written)


def test_a_request_that_requires_a_call_gets_one_first_thing(babbler):
    guide = babbler.tool_guides.guide(TOOLS, in_thinking=False, must_call=True)
    text = answer(babbler, guide, "<|im_start|>user\nwhatever<|im_end|>\n<|im_start|>assistant\n")
    head, opened, body = text.partition("<tool_call>")
    assert opened and not head.strip(), text
    assert parsed_calls(babbler, body)[0]["name"] in ("Sleep", "Paint")
    # Not required, the babbler's noise calls nothing.
    free = answer(babbler, babbler.tool_guides.guide(TOOLS, in_thinking=False), "<|im_start|>assistant\n", 40)
    assert "<tool_call>" not in free


def test_a_required_call_waits_for_the_end_of_thinking(babbler):
    guide = babbler.tool_guides.guide(TOOLS, in_thinking=True, must_call=True)
    text = answer(babbler, guide, "<|im_start|>assistant\n<think>\n", think_for=12)
    thinking, closed, rest = text.partition("</think>")
    assert closed and "<tool_call>" not in thinking
    head, opened, body = rest.partition("<tool_call>")
    assert opened and not head.strip(), text
    assert parsed_calls(babbler, body)


def test_the_token_in_flight_is_read_only_inside_a_call(engine):
    """mlx-lm's protocol: each processor call sees the token fed this step last in its context; the
    batch shows that token only after the step. Outside a call the guide masks lazily on it."""
    import mlx.core as mx

    guide = engine.tool_guides.guide(TOOLS, in_thinking=False)
    [tool_call] = engine.encode("<tool_call>")
    [newline] = engine.encode("\n")
    vocab = engine.model.args.vocab_size
    prompt = engine.encode("hello there")
    logits = mx.zeros((1, vocab))

    class Watched:
        """A context whose last token counts its reads (reading it waits for the step before)."""

        def __init__(self, tokens):
            self.tokens, self.reads = tokens, 0

        def __getitem__(self, index):
            self.reads += 1
            return mx.array(self.tokens)[index]

    first = Watched(prompt)  # the first call after the prompt: nothing pending
    assert guide(first, logits) is logits and first.reads == 0
    text = Watched(prompt + [engine.encode("Sure")[0]])  # free text in flight: left alone
    assert mx.all(guide(text, logits) == logits).item()
    guide.observe(text.tokens[-1])
    opening = Watched(text.tokens + [tool_call])  # `<tool_call>` in flight, not yet shown
    masked = guide(opening, logits)
    allowed = [i for i, v in enumerate(masked[0].tolist()) if v > -float("inf")]
    assert allowed == [newline] and not guide.in_call
    guide.observe(tool_call)
    assert guide.in_call
    body = Watched(opening.tokens + [newline])  # inside the call: read at once, and masked on it
    masked = guide(body, logits)
    assert body.reads >= 1
    allowed = {engine.tokenizer.decode([i]) for i, v in enumerate(masked[0].tolist()) if v > -float("inf")}
    assert allowed and all(text.startswith("{") for text in allowed), allowed
    guide.observe(newline)  # already taken in: not twice
    assert guide.in_call


def test_logits_wider_than_the_tokenizer_never_allow_the_extra_rows(engine):
    """Models pad their output layer past the tokenizer's vocabulary (Qwen3: 151,936 rows for 151,669 tokens)."""
    import mlx.core as mx

    guide = engine.tool_guides.guide(TOOLS, in_thinking=False)
    guide.inserted(engine.encode("<tool_call>"))
    width = engine.model.args.vocab_size + 100
    masked = guide(mx.array(engine.encode("hi <tool_call>")), mx.zeros((1, width)))
    assert masked.shape == (1, width)
    assert mx.all(masked[0, engine.model.args.vocab_size:] == -mx.inf).item()
    assert mx.any(masked[0] > -mx.inf).item()
