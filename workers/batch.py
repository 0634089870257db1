"""One model's running sequences, decoded together: mlx-lm's BatchGenerator plus the prompt cache.

BatchGenerator (what `mlx_lm.server` batches with) already does the hard
part: sequences of different lengths with their own caches, samplers and
limits, joining and leaving between steps, prompts prefilled in chunks
interleaved with the running decodes. This adds what a Hearth sequence
needs around it:

- its prompt's longest cached prefix on the way in, its K/V back into the
  prompt cache on the way out;
- a prompt that shares a long prefix with one still being prefilled (Claude
  Code's subagents share ~16K tokens of tools) waits until that prefill has
  passed the shared part, not for all of it, and takes the part from the
  cache instead of computing it a second time;
- prompts prefilling together share one chunk a step, so running streams wait
  about one chunk a token however many prompts arrive;
- tokens pushed into a running sequence (the end of thinking forced by a
  budget): its cache is taken out and put back with those tokens to prefill;
- a sequence's tool-call guide (workers/tool_guide.py), as its logits processor,
  shown each of its tokens as it comes out;
- a sampler shared by the sequences that sample alike (workers/sampling.py);
- an end of turn straight after its thinking taken back: the sequence goes on
  with the model's answer guard (workers/answer_guard.py), so it says something.

Sequences are named by the caller's keys; text is the caller's business.
"""

from dataclasses import dataclass, field
import logging

import mlx.core as mx
from mlx_lm.generate import BatchGenerator
from mlx_lm.models.cache import make_prompt_cache

from cache.block_index import common_prefix_length
from workers.sampling import Sampling, sampler_for

log = logging.getLogger(__name__)

MIN_PREFILL_SHARE = 64  # tokens: below this a step's fixed cost outweighs the prompt's share


@dataclass
class Output:
    """What one step did for one sequence: prefill progress, or a generated token."""

    key: str
    # While the prompt is prefilled: (tokens processed, prompt tokens), the cached prefix included.
    prefilled: tuple | None = None
    token: int | None = None
    # With a token: None while generating, "stop" (an end token) or "length" (its max_tokens).
    finish: str | None = None
    # On a sequence's first output: how many prompt tokens came from the prompt cache.
    reused: int | None = None


@dataclass(eq=False)
class Sequence:
    """One sequence's state, in either kind of batch."""

    key: str
    tokens: list  # the whole context: prompt, then what was generated or forced
    max_tokens: int
    sampler: object
    static_tokens: int = 0  # untrimmable caches snapshot the prompt here
    uid: int | None = None  # BatchGenerator's id, once inserted
    lease: object = None
    reused: int | None = None  # reported with the first output
    prefilling: bool = True
    prefilled: int = 0  # while prefilling: the prompt tokens its K/V holds, the cached ones included
    waiters: list = field(default_factory=list)  # sequences waiting for this prompt's prefix
    awaited: int = 0  # while waiting: the tokens of the other prompt's prefix it waits for
    guide: object = None  # workers/tool_guide.ToolCallGuide, or None
    guarded: bool = False  # it ended on its thinking once: the answer guard holds it from then on
    generated: int = 0  # tokens generated since it was last inserted (of its max_tokens)


def can_batch(model) -> bool:
    """mlx-lm's own test (server.py): every cache layer must know how to merge into a batch."""
    return all(hasattr(layer, "merge") for layer in make_prompt_cache(model))


def kv_bytes_per_token(model) -> int:
    """K/V bytes one token adds to a sequence, measured on a one-token prefill."""
    kv = make_prompt_cache(model)
    model(mx.array([[0]]), cache=kv)
    mx.eval([layer.state for layer in kv])
    positions = max((layer.keys.shape[2] for layer in kv if getattr(layer, "keys", None) is not None), default=1)
    return max(sum(layer.nbytes for layer in kv) // positions, 1)


class Sequences:
    """What both kinds of batch keep: their sequences by key, the prompt cache, a token's K/V size."""

    def __init__(self, engine, prompt_cache=None):
        self.engine = engine
        self.prompt_cache = engine.prompt_cache if prompt_cache is None else prompt_cache
        self._bytes_per_token = kv_bytes_per_token(engine.model)
        self._sequences: dict[str, Sequence] = {}

    def __len__(self):
        return len(self._sequences)

    def __contains__(self, key):
        return key in self._sequences

    def _new(self, key: str, tokens: list, sampling: Sampling, max_tokens: int, static_tokens: int,
             guide) -> Sequence:
        sampler = sampler_for(sampling, self.engine.tool_call_token)
        self._sequences[key] = Sequence(key, list(tokens), max_tokens, sampler, static_tokens, guide=guide)
        return self._sequences[key]

    @staticmethod
    def _first(sequence: Sequence, output: Output) -> Output:
        """`output`, carrying how much of the prompt the cache gave if it is the sequence's first."""
        output.reused, sequence.reused = sequence.reused, None
        return output

    def _processors(self, sequence: Sequence) -> list:
        answer_guard = self.engine.answer_guard if sequence.guarded else None
        return [p for p in (answer_guard, sequence.guide) if p is not None]

    def _ends_unanswered(self, sequence: Sequence) -> bool:
        """An end of turn with nothing said after the thinking, the first time: to be taken back."""
        guard = self.engine.answer_guard
        if guard is None or sequence.guarded or not guard.unanswered(sequence.tokens):
            return False
        log.info("sequence %s ended its turn on its thinking: it goes on, end of turn masked until it answers",
                 sequence.key)
        sequence.guarded = True
        sequence.max_tokens -= sequence.generated - 1  # the end of turn taken back is not one of its tokens
        if sequence.guide is not None:
            sequence.guide.inserted([])  # a new insertion: its counts start again
        return True


class ModelBatch(Sequences):
    def __init__(self, engine, max_sequences: int, prefill_chunk: int, prompt_cache=None):
        super().__init__(engine, prompt_cache)
        self._generator = BatchGenerator(
            engine.model,
            stop_tokens=[[t] for t in engine.tokenizer.eos_token_ids],
            completion_batch_size=max_sequences,
            prefill_batch_size=max_sequences,
            prefill_step_size=prefill_chunk,
        )
        self._chunk = prefill_chunk
        self._keys: dict[int, str] = {}

    def add(self, key: str, tokens: list, sampling: Sampling, max_tokens: int, static_tokens: int = 0,
            guide=None):
        """Start a sequence from its prompt `tokens`, generating at most `max_tokens` (held to `guide`'s
        grammar in its tool calls, if given)."""
        sequence = self._new(key, tokens, sampling, max_tokens, static_tokens, guide)
        leader, sequence.awaited = self._prefilling_prefix_of(sequence.tokens)
        if leader is None:
            self._start(sequence)
            return
        log.info("sequence %s waits for the prefill of %s to pass the %d tokens their prompts share",
                 key, leader.key, sequence.awaited)
        leader.waiters.append(sequence)
        self._release_waiters(leader)  # its prefill may be past them already

    def extend(self, key: str, tokens: list, max_tokens: int):
        """Continue a running sequence with `tokens` pushed into its context: prefill them, then generate."""
        sequence = self._sequences[key]
        kv, context = self._take_out(sequence)
        sequence.tokens = context + list(tokens)
        sequence.prefilling = True
        if sequence.guide is not None:
            sequence.guide.inserted(tokens)
        self._insert(sequence, [list(tokens)], max_tokens, kv, context)

    def remove(self, key: str):
        """Take a sequence out; what it computed goes into the prompt cache."""
        sequence = self._sequences.pop(key)
        if sequence.uid is None:
            self._forget_waiter(sequence)
            return
        kv, context = self._take_out(sequence)
        self.prompt_cache.store(sequence.lease, context, kv)
        self._release_waiters(sequence)

    def step(self) -> list[Output]:
        """One model call for every sequence: a token each for those decoding, a chunk for prompts."""
        self._share_prefill_chunk()
        prompt_responses, generation_responses = self._generator.next()
        outputs = []
        for response in prompt_responses:
            sequence = self._sequences[self._keys[response.uid]]
            processed, total = response.progress
            before = len(sequence.tokens) - total  # cached, or computed before an extend
            sequence.prefilled = before + processed
            if response.end_of_prompt:
                sequence.prefilling = False
            elif response.end_of_segment and sequence.static_tokens == sequence.prefilled:
                self._snapshot(sequence)
            self._release_waiters(sequence)
            outputs.append(self._first(sequence, Output(sequence.key, prefilled=(sequence.prefilled, before + total))))
        for response in generation_responses:
            key = self._keys[response.uid]
            sequence = self._sequences[key]
            if sequence.guide is not None:
                sequence.guide.observe(response.token)
            sequence.generated += 1
            if response.finish_reason == "stop" and self._ends_unanswered(sequence):
                del self._keys[response.uid]
                self.prompt_cache.store(sequence.lease, response.all_tokens, response.prompt_cache)
                self._start(sequence)  # from the prompt cache: a token or two to prefill
                continue
            outputs.append(Output(key, token=response.token, finish=response.finish_reason))
            if response.finish_reason is None:
                sequence.tokens.append(response.token)
                continue
            del self._sequences[key], self._keys[response.uid]
            self.prompt_cache.store(sequence.lease, response.all_tokens, response.prompt_cache)
        return outputs

    def _share_prefill_chunk(self):
        """One chunk of prompt a step in all, shared by the prompts prefilling.

        mlx-lm's generator gives every prompt in its prefill batch a chunk of its own each step, so
        four subagents' prompts arriving together would make every running stream wait four chunks
        a token. Shared, a step costs about what one prompt's chunk does; the prompts do the same
        work in smaller steps, finishing about when they would have (plus the running streams'
        decode steps taken between).
        """
        prefilling = sum(s.prefilling and s.uid is not None for s in self._sequences.values())
        self._generator.prefill_step_size = max(self._chunk // max(prefilling, 1), MIN_PREFILL_SHARE)

    @property
    def nbytes(self) -> int:
        """K/V held by the running sequences (padding included: a batch is as long as its longest)."""
        return self._generator.prompt_cache_nbytes

    def nbytes_with(self, tokens: int) -> int:
        """About what this batch's K/V would be with one more sequence of `tokens` tokens:
        every row of a batch is as long as its longest."""
        longest = max((len(s.tokens) for s in self._sequences.values()), default=0)
        return self._bytes_per_token * (len(self) + 1) * max(longest, tokens)

    def _start(self, sequence: Sequence):
        lease = self.prompt_cache.lookup(sequence.tokens)
        log.info("cache hit: reused %d of %d tokens (%.0f%%)", lease.reused, len(sequence.tokens),
                 100.0 * lease.reused / max(len(sequence.tokens), 1))
        sequence.lease, sequence.reused, sequence.prefilled = lease, lease.reused, lease.reused
        tokens = sequence.tokens
        segments = [tokens[lease.reused:]]
        if not self.prompt_cache.blockwise and sequence.static_tokens > lease.reused + 1:
            # Stop at the end of system and tools to snapshot it: the next conversation starts there.
            segments = [tokens[lease.reused:sequence.static_tokens], tokens[sequence.static_tokens:]]
        self._insert(sequence, segments, sequence.max_tokens, lease.kv, tokens[:lease.reused])

    def _insert(self, sequence, segments, max_tokens, kv, context):
        sequence.max_tokens, sequence.generated = max_tokens, 0
        [sequence.uid] = self._generator.insert_segments([segments], [max_tokens], caches=[kv], all_tokens=[context],
                                                         samplers=[sequence.sampler],
                                                         logits_processors=[self._processors(sequence)])
        self._keys[sequence.uid] = sequence.key

    def _take_out(self, sequence) -> tuple[list, list]:
        del self._keys[sequence.uid]
        kv, context = self._generator.remove([sequence.uid], return_prompt_caches=True)[sequence.uid]
        return kv, list(context)

    def _prefilling_prefix_of(self, tokens: list) -> tuple[Sequence | None, int]:
        """The sequence still prefilling a prompt that shares the most whole cache blocks of `tokens`, and
        the tokens in those blocks; (None, 0) unless that is at least a block more than the cache holds."""
        if not self.prompt_cache.blockwise:
            return None, 0
        block = self.prompt_cache.index.block_size
        shared = {other: common_prefix_length(other.tokens, tokens) // block * block
                  for other in self._sequences.values() if other.uid is not None and other.prefilling}
        leader = max(shared, key=shared.get, default=None)
        if leader is None or shared[leader] < self.prompt_cache.cached_length(tokens) + block:
            return None, 0
        return leader, shared[leader]

    def _release_waiters(self, sequence: Sequence):
        """Start those whose shared prefix this sequence's K/V now holds (all of them once it is prefilled
        or gone) from the cache, that prefix indexed first.

        A waiter needs only the part it shares: behind a long cold prompt, a request sharing just its
        tools would otherwise wait for the whole prefill (minutes, at 50K tokens).
        """
        done = not sequence.prefilling or sequence.key not in self._sequences
        ready = [w for w in sequence.waiters if done or w.awaited <= sequence.prefilled]
        if not ready:
            return
        if sequence.key in self._sequences and sequence.uid is not None:
            [(kv, context)] = self._generator.extract_cache([sequence.uid]).values()
            self.prompt_cache.add(list(context), kv)
        sequence.waiters = [w for w in sequence.waiters if w not in ready]
        for waiter in ready:
            self._start(waiter)

    def _forget_waiter(self, waiter: Sequence):
        for sequence in self._sequences.values():
            if waiter in sequence.waiters:
                sequence.waiters.remove(waiter)
                return

    def _snapshot(self, sequence):
        [(kv, context)] = self._generator.extract_cache([sequence.uid]).values()
        self.prompt_cache.snapshot(list(context), kv)
