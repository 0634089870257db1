"""Tool calls that parse and name an offered tool, whatever the model's size: decoding held to a grammar.

Small and quantized models garble their tool calls (a tool they were not
offered, JSON that does not close). Once a sequence writes `<tool_call>`
outside its thinking, its next tokens are held to the call's grammar
(workers/tool_grammar.py): at each step llguidance computes which tokens keep
the call valid and the rest are masked out, until `</tool_call>` closes it.
Everything else the model writes is left alone: whether to call a tool is
still its own choice.

A ToolCallGuide is an mlx-lm logits processor, one per sequence. It sees the
token fed at each step (the one sampled at the step before); the tokens put
into a sequence as a prompt (a resumed job's output so far, the end of thinking
forced by its budget) it is told of by `inserted`.
"""

from collections import OrderedDict
import json
import logging

import llguidance
import llguidance.hf
import mlx.core as mx
import numpy as np

from workers.tool_grammar import call_body_grammar

log = logging.getLogger(__name__)

THINK_OPEN, THINK_CLOSE, TOOL_OPEN, TOOL_CLOSE = "<think>", "</think>", "<tool_call>", "</tool_call>"

# Compiled grammars kept per set of offered tools (Claude Code offers the same tools every turn).
GRAMMARS_KEPT = 16


class ToolGuides:
    """One model's guides: its tokenizer as llguidance sees it, and the grammars compiled for it."""

    def __init__(self, tokenizer, tool_format: str, vocab_size: int):
        self._tokenizer = llguidance.hf.from_tokenizer(tokenizer._tokenizer, n_vocab=vocab_size,
                                                       eos_token=sorted(tokenizer.eos_token_ids))
        self._format = tool_format
        self._ids = {tag: _single_token(tokenizer, tag) for tag in (THINK_OPEN, THINK_CLOSE, TOOL_OPEN, TOOL_CLOSE)}
        self._grammars: OrderedDict[str, llguidance.LLMatcher | None] = OrderedDict()

    def guide(self, tools: list | None, in_thinking: bool) -> "ToolCallGuide | None":
        """A guide for a sequence offered `tools`; None when there is nothing to guide."""
        if not tools or self._ids[TOOL_OPEN] is None:
            return None
        pristine = self._matcher(tools)
        return None if pristine is None else ToolCallGuide(pristine, self._ids, in_thinking)

    def _matcher(self, tools: list) -> llguidance.LLMatcher | None:
        key = json.dumps(tools, sort_keys=True)
        if key in self._grammars:
            self._grammars.move_to_end(key)
            return self._grammars[key]
        close = f"<[{self._ids[TOOL_CLOSE]}]>" if self._ids[TOOL_CLOSE] is not None else json.dumps(TOOL_CLOSE)
        grammar = llguidance.LLMatcher.grammar_from_lark(call_body_grammar(tools, self._format, close))
        matcher = llguidance.LLMatcher(self._tokenizer, grammar, log_level=0)
        if matcher.is_error():
            # Its calls go unguided, as before: the stream parser still returns a garbled one as text.
            log.warning("tool calls go unguided: llguidance cannot compile these tools' grammar: %s",
                        matcher.get_error()[:500])
            matcher = None
        self._grammars[key] = matcher
        while len(self._grammars) > GRAMMARS_KEPT:
            self._grammars.popitem(last=False)
        return matcher


def _single_token(tokenizer, text: str) -> int | None:
    ids = tokenizer.encode(text, add_special_tokens=False)
    return ids[0] if len(ids) == 1 else None


class ToolCallGuide:
    def __init__(self, pristine: llguidance.LLMatcher, ids: dict, in_thinking: bool):
        self._pristine = pristine
        self._ids = ids
        self._thinking = in_thinking
        self._call: llguidance.LLMatcher | None = None  # the open call's matcher
        self._skip = True  # the first token fed after an insertion is the prompt's last: already known

    @property
    def in_call(self) -> bool:
        return self._call is not None

    def inserted(self, tokens: list):
        """`tokens` went into the sequence as a prompt (its continuation): take them in."""
        for token in tokens:
            self._advance(token)
        self._skip = True

    def __call__(self, context: mx.array, logits: mx.array) -> mx.array:
        if self._skip:
            self._skip = False
        else:
            self._advance(context[-1].item())
        if self._call is None:
            return logits
        bits = np.unpackbits(np.frombuffer(self._call.compute_bitmask(), dtype=np.uint8), bitorder="little")
        allowed = mx.array(bits[: logits.shape[-1]].astype(np.bool_))
        return mx.where(allowed, logits, mx.array(-mx.inf, dtype=logits.dtype))

    def _advance(self, token: int):
        if self._call is not None:
            if not self._call.consume_token(token):
                log.warning("tool call guide: token %d left the grammar (%s); the call goes on unguided",
                            token, self._call.get_error()[:200])
                self._call = None
            elif self._call.is_stopped():
                self._call = None  # `</tool_call>`: the model is free again
        elif token == self._ids[THINK_OPEN]:
            self._thinking = True
        elif token == self._ids[THINK_CLOSE]:
            self._thinking = False
        elif token == self._ids[TOOL_OPEN] and not self._thinking:
            self._call = self._pristine.deep_copy()
