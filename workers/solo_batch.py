"""One model's sequences one at a time, for a model whose cache layers cannot merge into a batch."""

from collections import deque
import logging

import mlx.core as mx
from mlx_lm.generate import generate_step

from workers.batch import Output, Sequence, Sequences
from workers.sampling import Sampling

log = logging.getLogger(__name__)


class SoloBatch(Sequences):
    """For a model whose cache layers cannot merge into a batch (mlx-lm's server cannot batch those either).

    The same interface as ModelBatch, one sequence at a time: the others wait
    their turn (the worker logs it once), while other models' batches keep
    stepping beside it. Prompts are still prefilled a chunk per step, then
    mlx-lm's generate_step decodes.
    """

    def __init__(self, engine, prefill_chunk: int, prompt_cache=None):
        super().__init__(engine, prompt_cache)
        self._chunk = prefill_chunk
        self._eos = set(engine.tokenizer.eos_token_ids)
        self._order: deque = deque()  # keys, the decoding one first
        self._current = None  # (sequence, its K/V, tokens left to prefill, generator)

    def add(self, key: str, tokens: list, sampling: Sampling, max_tokens: int, static_tokens: int = 0,
            guide=None):
        self._new(key, tokens, sampling, max_tokens, static_tokens, guide)
        self._order.append(key)
        if len(self._order) > 1:
            log.info("sequence %s waits: model %s decodes one sequence at a time", key, self.engine.name)

    def extend(self, key: str, tokens: list, max_tokens: int):
        sequence, kv, _, _ = self._current
        sequence.tokens += list(tokens)
        sequence.max_tokens, sequence.generated, sequence.prefilling = max_tokens, 0, True
        if sequence.guide is not None:
            sequence.guide.inserted(tokens)
        self._current = (sequence, kv, list(tokens), None)

    def remove(self, key: str):
        sequence = self._sequences.pop(key)
        self._order.remove(key)
        if self._current and self._current[0] is sequence:
            kv = self._current[1]
            self._current = None
            self.prompt_cache.store(sequence.lease, sequence.tokens, kv)

    def step(self) -> list[Output]:
        if not self._order:
            return []
        if self._current is None:
            self._current = self._begin(self._sequences[self._order[0]])
        sequence, kv, pending, generator = self._current
        if len(pending) > 1:
            chunk, pending = pending[:min(self._chunk, len(pending) - 1)], pending[min(self._chunk, len(pending) - 1):]
            self.engine.model(mx.array(chunk)[None], cache=kv)
            mx.eval([layer.state for layer in kv])
            self._current = (sequence, kv, pending, generator)
            done = len(sequence.tokens) - len(pending)
            return [self._first(sequence, Output(sequence.key, prefilled=(done, len(sequence.tokens))))]
        outputs = []
        if generator is None:
            generator = generate_step(mx.array(pending), self.engine.model, prompt_cache=kv,
                                      sampler=sequence.sampler, max_tokens=sequence.max_tokens,
                                      logits_processors=self._seeing_all(sequence, pending))
            sequence.prefilling = False
            outputs.append(self._first(sequence, Output(sequence.key, prefilled=(len(sequence.tokens),) * 2)))
        token, _ = next(generator)
        if sequence.guide is not None:
            sequence.guide.observe(token)
        sequence.generated += 1
        finish = "stop" if token in self._eos else "length" if sequence.generated >= sequence.max_tokens else None
        if finish == "stop" and self._ends_unanswered(sequence):
            self.prompt_cache.store(sequence.lease, sequence.tokens + [token], kv)
            self._current = self._begin(sequence)
            return outputs
        outputs.append(Output(sequence.key, token=token, finish=finish))
        sequence.tokens.append(token)
        self._current = (sequence, kv, [], generator)
        if finish:
            self._sequences.pop(sequence.key)
            self._order.popleft()
            self._current = None
            self.prompt_cache.store(sequence.lease, sequence.tokens, kv)
        return outputs

    @property
    def nbytes(self) -> int:
        return sum(layer.nbytes for layer in self._current[1]) if self._current else 0

    def nbytes_with(self, tokens: int) -> int:
        return self.nbytes + self._bytes_per_token * tokens

    def _seeing_all(self, sequence: Sequence, pending: list) -> list:
        """Its logits processors, shown its whole context: generate_step shows them only the tokens it is given."""
        processors = self._processors(sequence)
        if not processors:
            return []
        before = mx.array(sequence.tokens[:len(sequence.tokens) - len(pending)], dtype=mx.int32)
        return [lambda tokens, logits, p=p: p(mx.concatenate([before, tokens]), logits) for p in processors]

    def _begin(self, sequence: Sequence):
        lease = self.prompt_cache.lookup(sequence.tokens)
        sequence.lease, sequence.reused, sequence.generated = lease, lease.reused, 0
        return sequence, lease.kv, sequence.tokens[lease.reused:], None
