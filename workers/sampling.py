"""How a sequence's next token is drawn: mlx-lm's samplers, shared, and the tokens never drawn.

mlx-lm samples a batch whose sequences share one sampler in a single call
(else row by row), and runs logits processors row by row. So the sequences
that sample alike share one sampler here, and a mask that never changes for
a request (`<tool_call>`, when it offers no tools) lives in that sampler, once
for the batch, not in a logits processor of each sequence's: as a processor
it cost eight streams about 15% (BENCHMARKS.md, Continuous batching).
"""

from dataclasses import dataclass
from functools import lru_cache

import mlx.core as mx
from mlx_lm.sample_utils import make_sampler


@dataclass(frozen=True)
class Sampling:
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    # False: the request offers no tools (or its tool_choice lets it call none), and `<tool_call>` is
    # never drawn. Anthropic's model cannot call a tool nobody offered; a small one left free writes a
    # call anyway (the bundled model answers "Run ls." with a call to a tool it was trained with).
    may_call_tools: bool = True

    @classmethod
    def for_request(cls, request) -> "Sampling":
        """How a GenerationRequest's tokens are drawn."""
        return cls(request.temperature, request.top_p, request.top_k, may_call_tools=bool(request.tools_to_call()))


@lru_cache(maxsize=64)
def sampler_for(sampling: Sampling, tool_call_token: int | None):
    """mlx-lm's sampler for `sampling`, one for all the sequences that sample alike."""
    sampler = make_sampler(temp=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k)
    if sampling.may_call_tools or tool_call_token is None:
        return sampler
    return never_drawing(sampler, tool_call_token)


def never_drawing(sampler, token: int):
    """`sampler`, with `token` never drawn.

    Its probability goes to the others' in proportion: mlx-lm's draw and its top-p
    both measure against the mass present, so the log-probabilities need no renormalizing.
    """
    masks = {}  # by width

    def sample(logprobs: mx.array) -> mx.array:
        width = logprobs.shape[-1]
        if width not in masks:
            masks[width] = mx.arange(width) == token
        return sampler(mx.where(masks[width], mx.array(-mx.inf, dtype=logprobs.dtype), logprobs))

    return sample
