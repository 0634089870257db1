"""Thinking is followed by an answer (workers/answer_guard.py): no turn ends straight after `</think>`."""

import mlx.core as mx
import pytest

from workers.engine import Engine
from workers.sampling import Sampling


@pytest.fixture(scope="module")
def babbler(tmp_path_factory):
    from scripts.build_babbler import build_babbler

    return Engine(str(build_babbler(tmp_path_factory.mktemp("babbler"))), cache_bytes=1 << 28)


class EagerToEnd:
    """A model whose favourite next token is always an end of turn, far ahead of any other."""

    def __init__(self, model, end_ids):
        self._model = model
        self._ends = mx.zeros(model.args.vocab_size, dtype=mx.bool_).at[mx.array(end_ids)].add(True)

    def __call__(self, inputs, cache=None, **kwargs):
        logits = self._model(inputs, cache=cache, **kwargs)
        return mx.where(self._ends, logits.max(axis=-1, keepdims=True) + 20, logits)

    def __getattr__(self, name):
        return getattr(self._model, name)


def masked_ends(engine, text: str) -> bool:
    """Whether the guard masks every end-of-turn token after `text` (and says so of the tokens themselves)."""
    tokens = engine.encode(text)
    logits = mx.zeros((1, engine.model.args.vocab_size))
    out = engine.answer_guard(mx.array(tokens), logits)
    ends = sorted(engine.tokenizer.eos_token_ids)
    others = [t for t in range(20) if t not in ends]
    assert mx.all(out[0, mx.array(others)] == 0).item(), "only end-of-turn tokens are ever masked"
    masked = {out[0, t].item() == float("-inf") for t in ends}
    assert masked == {engine.answer_guard.unanswered(tokens)}
    return masked.pop()


@pytest.mark.parametrize("text, masked", [
    ("<think>\nLet me see.\n</think>", True),
    ("<think>\nLet me see.\n</think>\n\n", True),  # Qwen3's way, and a thinking-off prompt's empty block
    ("<think>\nLet me see.\n</think>\n\n\n", True),
    ("<think>\nLet me see.\n</think>\n\nYes", False),
    ("<think>\nLet me see.\n</think>\n\nYes.\n\n", False),
    ("<think>\nLet me see.", False),  # ending inside its thinking is the job's business (workers/jobs.py)
    ("Hello there", False),
])
def test_end_of_turn_is_masked_only_while_nothing_is_said_after_thinking(babbler, text, masked):
    assert masked_ends(babbler, text) is masked


@pytest.mark.parametrize("batchable", [True, False], ids=["batch", "one at a time"])
def test_a_model_that_would_end_on_its_thinking_says_something_first(babbler, monkeypatch, batchable):
    monkeypatch.setattr(babbler, "batchable", batchable)
    ends = set(babbler.tokenizer.eos_token_ids)
    monkeypatch.setattr(babbler, "model", EagerToEnd(babbler.model, sorted(ends)))
    prompt = babbler.encode("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n<think>\nA greeting.\n</think>\n\n")

    def answer(max_tokens: int) -> list:
        batch = babbler.batch(2, 64)
        batch.add("a", prompt, Sampling(temperature=1.0), max_tokens)
        tokens = []
        while "a" in batch:
            tokens += [o.token for o in batch.step() if o.token is not None]
        return tokens

    # Its first end of turn is taken back: it says something, then ends as it likes.
    guarded = answer(8)
    assert guarded[-1] in ends and 2 <= len(guarded) <= 8, guarded
    assert babbler.tokenizer.decode(guarded[:-1]).strip(), "its answer says something"
    assert len(answer(1)) == 1, "the end taken back is not counted against max_tokens"
    # Without the guard, the same model ends its turn at once, with nothing said.
    monkeypatch.setattr(babbler, "answer_guard", None)
    unguarded = answer(8)
    assert len(unguarded) == 1 and unguarded[0] in ends
