"""Tool calls that parse and name an offered tool, whatever the model's size: decoding held to a grammar.

Small and quantized models garble their tool calls (a tool they were not
offered, JSON that does not close). Once a sequence writes `<tool_call>`
outside its thinking, its next tokens are held to the call's grammar
(workers/tool_grammar.py): at each step llguidance computes which tokens keep
the call valid and the rest are masked out, until `</tool_call>` closes it.
Everything else the model writes is left alone: whether to call a tool is
still its own choice, unless the request makes it call one (Anthropic's
`tool_choice` any or tool, OpenAI's required or a named function): then its
answer, once its thinking is done, opens with `<tool_call>` (after a little
whitespace, if it likes). A request that offers no tools has no guide: its
sampler never draws `<tool_call>` (workers/sampling.py).

A ToolCallGuide is an mlx-lm logits processor, one per sequence. mlx-lm
samples a step's token while the next step is being built, and reading it
would stall that overlap; outside a call the guide never reads it: the batch
tells it each token once out (`observe`), a step later, and a token still in
flight that may be `<tool_call>` gets the call's first mask lazily, in MLX.
Only inside a call, where the mask depends on every token, does it wait for
the token. The tokens put into a sequence as a prompt (a resumed job's output
so far, the end of thinking forced by its budget) it is told of by `inserted`.
"""

from collections import OrderedDict
from dataclasses import dataclass
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
        self._ids = {tag: single_token(tokenizer, tag) for tag in (THINK_OPEN, THINK_CLOSE, TOOL_OPEN, TOOL_CLOSE)}
        self._grammars: OrderedDict[str, _Grammar | None] = OrderedDict()

    def guide(self, tools: list | None, in_thinking: bool, must_call: bool = False,
              may_think: bool = False) -> "ToolCallGuide | None":
        """A guide for a sequence offered `tools`; None when there is nothing to guide.

        `must_call`: its answer must call a tool. `may_think`: it may open its thinking
        itself with its first token (a hybrid Qwen3 with thinking on)."""
        if not tools or self._ids[TOOL_OPEN] is None:
            return None
        call = self._call_grammar(tools)
        if call is None:
            return None
        # A little whitespace first (Qwen3 writes two newlines after its thinking), never enough to run on.
        opening = self._compiled(f"start: /[ \\t\\n]{{0,3}}/ <[{self._ids[TOOL_OPEN]}]>") if must_call else None
        return ToolCallGuide(call, self._ids, in_thinking, opening, may_think)

    def _call_grammar(self, tools: list) -> "_Grammar | None":
        close = f"<[{self._ids[TOOL_CLOSE]}]>" if self._ids[TOOL_CLOSE] is not None else json.dumps(TOOL_CLOSE)
        return self._compiled(call_body_grammar(tools, self._format, close))

    def _compiled(self, lark: str) -> "_Grammar | None":
        if lark in self._grammars:
            self._grammars.move_to_end(lark)
            return self._grammars[lark]
        matcher = llguidance.LLMatcher(self._tokenizer, llguidance.LLMatcher.grammar_from_lark(lark), log_level=0)
        grammar = None
        if matcher.is_error():
            # Its calls go unguided, as before: the stream parser still returns a garbled one as text.
            log.warning("tool calls go unguided: llguidance cannot compile these tools' grammar: %s",
                        matcher.get_error()[:500])
        else:
            grammar = _Grammar(matcher, _allowed(matcher, self._tokenizer.vocab_size))
        self._grammars[lark] = grammar
        while len(self._grammars) > GRAMMARS_KEPT:
            self._grammars.popitem(last=False)
        return grammar


@dataclass(frozen=True)
class _Grammar:
    matcher: llguidance.LLMatcher  # at its start: each sequence takes a copy
    first: np.ndarray  # the tokens its start allows


def _allowed(matcher: llguidance.LLMatcher, width: int) -> np.ndarray:
    """The tokens `matcher` allows next, as a mask `width` wide."""
    bits = np.unpackbits(np.frombuffer(matcher.compute_bitmask(), dtype=np.uint8), bitorder="little")
    return _widened(bits.astype(np.bool_), width)


def _widened(mask: np.ndarray, width: int) -> np.ndarray:
    """`mask` cut or padded to `width` (logits may have rows past the tokenizer's: never allowed)."""
    out = np.zeros(width, dtype=np.bool_)
    out[:min(width, mask.size)] = mask[:width]
    return out


def single_token(tokenizer, text: str) -> int | None:
    ids = tokenizer.encode(text, add_special_tokens=False)
    return ids[0] if len(ids) == 1 else None


class ToolCallGuide:
    """One sequence's logits processor: free text, thinking, or a call held to its grammar."""

    def __init__(self, call: _Grammar, ids: dict, in_thinking: bool, opening: _Grammar | None = None,
                 may_think: bool = False):
        self._grammar = call
        self._ids = ids
        self._thinking = in_thinking
        self._call: llguidance.LLMatcher | None = None  # the open call's matcher
        # Until its first call opens, a sequence that must call one: whitespace, then `<tool_call>`.
        self._opening = opening.matcher.deep_copy() if opening is not None else None
        self._may_think = may_think and not in_thinking  # until its first token
        self._first = None  # the call's first mask, in MLX, made on first use
        # Since the last insertion: processor calls, tokens the batch has shown, tokens taken in.
        self._calls = self._observed = self._taken = 0

    @property
    def in_call(self) -> bool:
        return self._call is not None

    def inserted(self, tokens: list):
        """`tokens` went into the sequence as a prompt (its continuation): take them in."""
        for token in tokens:
            self._advance(token)
        self._calls = self._observed = self._taken = 0

    def observe(self, token: int):
        """The batch's next output token for this sequence (the guide may have taken it already)."""
        self._observed += 1
        if self._observed > self._taken:
            self._advance(token)
            self._taken = self._observed

    def __call__(self, context: mx.array, logits: mx.array) -> mx.array:
        # context[-1] is fed this step: the prompt's last token on the first call after an insertion,
        # else the token sampled at the step before, which the batch has not shown yet.
        pending = self._calls > self._taken
        self._calls += 1
        if pending and self._needs_every_token():
            self._advance(context[-1].item())
            self._taken = self._calls - 1
            pending = False
        matcher = self._call if self._call is not None else None if self._thinking else self._opening
        if matcher is not None:
            allowed = _allowed(matcher, logits.shape[-1])
            if self._may_think and self._call is None and self._ids[THINK_OPEN] is not None:
                allowed[self._ids[THINK_OPEN]] = True
            return mx.where(mx.array(allowed), logits, mx.array(-mx.inf, dtype=logits.dtype))
        if not pending or self._thinking:
            return logits
        # Free: should the token in flight open a call, this step's token is the call's first.
        if self._first is None:
            self._first = mx.array(_widened(self._grammar.first, logits.shape[-1]))
        opens = context[-1] == self._ids[TOOL_OPEN]
        return mx.where(mx.logical_and(opens, mx.logical_not(self._first)),
                        mx.array(-mx.inf, dtype=logits.dtype), logits)

    def _needs_every_token(self) -> bool:
        # A call, or one the answer must open: its first token comes right after `</think>`.
        return self._call is not None or self._opening is not None

    def _advance(self, token: int):
        may_think, self._may_think = self._may_think, False
        if self._call is not None:
            if not self._call.consume_token(token):
                log.warning("tool call guide: token %d left the grammar (%s); the call goes on unguided",
                            token, self._call.get_error()[:200])
                self._call = None
            elif self._call.is_stopped():
                self._call = None  # `</tool_call>`: the model is free again
        elif token == self._ids[THINK_OPEN] and (may_think or self._opening is None):
            self._thinking = True
        elif token == self._ids[THINK_CLOSE]:
            self._thinking = False
        elif token == self._ids[TOOL_OPEN] and not self._thinking:
            self._call, self._opening = self._grammar.matcher.deep_copy(), None
        elif self._opening is not None and not self._thinking and not self._opening.consume_token(token):
            log.warning("tool call guide: token %d is not the call the request requires; it goes unguided", token)
            self._opening = None
