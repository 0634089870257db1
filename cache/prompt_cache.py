"""The worker's prompt cache for one model: the block index plus thin MLX glue.

A lookup assembles an mlx-lm KV cache from the matched blocks (a copy of
the reused K/V, far cheaper than recomputing it) and the caller prefills only
the rest. After generation, the new tokens' K/V are cut into blocks and
indexed. Models whose caches cannot be trimmed (rotating windows,
state-space layers) cannot be assembled from blocks: for those, mlx-lm's own
LRUPromptCache reuses exact snapshots.
"""

import copy
from dataclasses import dataclass
import logging

import mlx.core as mx
from mlx_lm.models.cache import LRUPromptCache, can_trim_prompt_cache, make_prompt_cache

from cache.block_index import BlockIndex

log = logging.getLogger(__name__)

DEFAULT_BLOCK_TOKENS = 128


@dataclass
class Lease:
    """A looked-up cache: hand it to generation, then back to `store` (or `release`)."""

    kv: list
    reused: int
    blocks: list


class PromptCache:
    def __init__(self, model, budget_bytes: int, block_tokens: int = DEFAULT_BLOCK_TOKENS):
        self.model = model
        self.index = BlockIndex(block_tokens, budget_bytes)
        self.blockwise = can_trim_prompt_cache(make_prompt_cache(model))
        self._snapshots = None if self.blockwise else LRUPromptCache(max_size=8, max_bytes=budget_bytes)

    def lookup(self, tokens: list) -> Lease:
        """The longest cached prefix, always leaving at least one token to prefill."""
        if not self.blockwise:
            kv, rest = self._snapshots.fetch_nearest_cache("model", tokens)
            reused = len(tokens) - len(rest) if kv is not None else 0
            self.index.record_lookup(len(tokens), reused)
            return Lease(kv or make_prompt_cache(self.model), reused, [])
        match = self.index.match(tokens, limit=len(tokens) - 1)
        kv = self.assemble(match.blocks, match.length)
        self.index.pin(match.blocks)
        self.index.record_lookup(len(tokens), match.length)
        return Lease(kv, match.length, match.blocks)

    def assemble(self, blocks: list, length: int) -> list:
        """An mlx-lm KV cache holding the first `length` tokens of a chain of blocks."""
        kv = make_prompt_cache(self.model)
        if not blocks or length <= 0:
            return kv
        tail = length - sum(len(b.tokens) for b in blocks[:-1])
        for layer, layer_cache in enumerate(kv):
            parts = [(b.payload[layer][0], b.payload[layer][1]) for b in blocks[:-1]]
            last_k, last_v = blocks[-1].payload[layer]
            parts.append((last_k[..., :tail, :], last_v[..., :tail, :]))
            layer_cache.state = (_concat([k for k, _ in parts]), _concat([v for _, v in parts]), length)
        return kv

    def snapshot(self, tokens: list, kv: list):
        """For caches that cannot be trimmed: keep an exact copy at a segment boundary.

        Typed "system" in mlx-lm's LRUPromptCache, which evicts those last.
        """
        if not self.blockwise and tokens:
            self._snapshots.insert_cache("model", list(tokens), copy.deepcopy(kv), cache_type="system")

    def add(self, tokens: list, kv: list):
        """Index what `kv` holds: the K/V of `tokens[:its offset]`."""
        held = kv[0].offset if kv and hasattr(kv[0], "offset") else 0
        tokens = list(tokens[:held])
        if not tokens:
            return
        if self.blockwise:
            self._index(tokens, kv)
        else:
            self._snapshots.insert_cache("model", tokens, kv)

    def _index(self, tokens: list, kv: list):
        """Cut `kv` into the blocks the index lacks."""
        layers = [c.state[:2] for c in kv]

        def payload(begin, end):
            parts = [(mx.contiguous(k[..., begin:end, :]), mx.contiguous(v[..., begin:end, :])) for k, v in layers]
            mx.eval(parts)
            return parts, sum(k.nbytes + v.nbytes for k, v in parts)

        self.index.insert(tokens, payload)
        self.index.evict()

    def store(self, lease: Lease, tokens: list, kv: list | None = None):
        """Index `kv` (the lease's own by default), then give the lease back."""
        try:
            self.add(tokens, lease.kv if kv is None else kv)
        finally:
            self.release(lease)

    def cached_length(self, tokens: list) -> int:
        """How much of `tokens` a lookup would find (without leasing it)."""
        return self.index.match(tokens).length if self.blockwise else 0

    def cached_blocks(self, tokens: list) -> list:
        """The blocks holding the cached prefix of `tokens`, without counting as a use (none for snapshot caches)."""
        return self.index.match(tokens, touch=False).blocks if self.blockwise else []

    def release(self, lease: Lease):
        if lease.blocks:
            self.index.unpin(lease.blocks)
            lease.blocks = []
        self.index.evict()

    def hold(self, tokens: list) -> list:
        """Pin the cached prefix of `tokens` (a suspended job's) against eviction; give it back to `unhold`.

        Snapshot caches (untrimmable models) cannot pin: their resume may prefill again.
        """
        if not self.blockwise:
            return []
        blocks = self.index.match(tokens).blocks
        self.index.pin(blocks)
        return blocks

    def unhold(self, blocks: list):
        self.index.unpin(blocks)
        self.index.evict()

    def stats(self) -> dict:
        c = self.index.counters
        return {
            "lookups": c.lookups, "hits": c.hits, "prompt_tokens": c.prompt_tokens,
            "reused_tokens": c.reused_tokens, "evicted_blocks": c.evicted_blocks,
            "blocks": len(self.index), "bytes": self.index.nbytes, "peak_bytes": self.index.peak_nbytes,
            "budget_bytes": self.index.budget_bytes, "block_tokens": self.index.block_size,
        }


def _concat(arrays):
    return arrays[0] if len(arrays) == 1 else mx.concatenate(arrays, axis=2)

