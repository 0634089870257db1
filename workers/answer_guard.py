"""Thinking is followed by an answer: a turn never ends straight after `</think>`.

Sampled at temperature 1 (Claude Code's), a small model now and then ends its
turn right after closing its thinking, or right after the empty thinking block
of a thinking-off prompt: the message has no text, and `claude -p` prints
nothing. Qwen3 answers after its thinking; Hearth holds every model to that.

The batch (workers/batch.py) takes such an end of turn back: the sequence goes
on from its context, with this guard as a logits processor, which masks out
the end-of-turn tokens while all that was written since the last `</think>` is
a little whitespace; from its first word on, it may end whenever it likes.
Only a sequence that needed it carries the guard, so the others pay nothing
for it at each step. It reads only the context, lazily in MLX, and keeps no
state of a sequence's: one guard serves them all.
"""

import mlx.core as mx
import numpy as np

from workers.tool_guide import THINK_CLOSE, single_token

# What Qwen3 writes between `</think>` and its answer ("\n\n"), with room to spare.
WHITESPACE = ("\n", "\n\n", "\n\n\n", " ", "  ")
LOOK_BACK = 3  # `</think>` and up to two whitespace tokens after it


class AnswerGuard:
    def __init__(self, close_id: int, whitespace_ids: list, end_ids: list):
        self._close = close_id
        self._whitespace_ids = set(whitespace_ids)
        self._end_ids = end_ids
        self._masks: dict[int, tuple] = {}  # by logits width: (whitespace, ends), as MLX arrays

    @classmethod
    def for_tokenizer(cls, tokenizer) -> "AnswerGuard | None":
        """The guard for a tokenizer with `</think>` as one token; None for a model that does not think."""
        close = single_token(tokenizer, THINK_CLOSE)
        if close is None:
            return None
        whitespace = [t for t in (single_token(tokenizer, text) for text in WHITESPACE) if t is not None]
        return cls(close, whitespace, sorted(tokenizer.eos_token_ids))

    def unanswered(self, tokens: list) -> bool:
        """Whether `tokens` end in a `</think>` followed by whitespace only: an end of turn here says nothing."""
        for token in reversed(tokens[-LOOK_BACK:]):
            if token == self._close:
                return True
            if token not in self._whitespace_ids:
                return False
        return False

    def __call__(self, context: mx.array, logits: mx.array) -> mx.array:
        # `unanswered`, lazily: the last token may still be in flight.
        whitespace, ends = self._masks_for(logits.shape[-1])
        recent = context[-LOOK_BACK:]
        unanswered, blank = mx.array(False), mx.array(True)
        for back in range(1, recent.size + 1):
            token = recent[-back]
            unanswered = mx.logical_or(unanswered, mx.logical_and(blank, token == self._close))
            blank = mx.logical_and(blank, whitespace[token])
        return mx.where(mx.logical_and(unanswered, ends), mx.array(-mx.inf, dtype=logits.dtype), logits)

    def _masks_for(self, width: int) -> tuple:
        if width not in self._masks:
            self._masks[width] = (_mask(self._whitespace_ids, width), _mask(self._end_ids, width))
        return self._masks[width]


def _mask(ids, width: int) -> mx.array:
    mask = np.zeros(width, dtype=np.bool_)
    mask[[i for i in ids if i < width]] = True
    return mx.array(mask)
