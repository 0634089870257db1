"""What this worker's prompt caches hold, published for the API's routing (see hearth/affinity.py).

Each request carries its prompt's fingerprints. When a job ends, its prompt's
K/V is in the prompt cache; the fingerprints are kept beside the cache blocks
that hold it: the first block for the shared levels (tools, system prompt),
the last for the conversation's own. A fingerprint is held while its block
is, and eviction takes a chain from its end, so a block still cached means
its whole prefix is. Redis gets the difference since the last publication, a
hash of fingerprint -> prompt tokens cached; the API reads only the hashes of
workers whose heartbeat is alive.
"""

from collections import OrderedDict
from dataclasses import dataclass

from hearth.affinity import SHARED_LEVELS
from hearth.contract import affinity_key

# Fingerprints remembered per worker (LRU): a few thousand conversations' worth of turns.
MAX_FINGERPRINTS = 4096


@dataclass
class _Held:
    index: object  # the cache's BlockIndex
    block: object  # the Block whose presence means the prefix is cached
    tokens: int  # prompt tokens that block's chain covers


class HeldPrefixes:
    def __init__(self, worker_name: str, limit: int = MAX_FINGERPRINTS):
        self.key = affinity_key(worker_name)
        self._limit = limit
        self._held: OrderedDict[str, _Held] = OrderedDict()
        self._published: dict[str, int] | None = None  # None: Redis's copy is unknown, rewrite it

    def record(self, fingerprints: list, prompt_cache, prompt: list):
        """A job's prompt just went back to `prompt_cache`: note which blocks hold its prefixes."""
        blocks = prompt_cache.cached_blocks(prompt) if fingerprints else []
        if not blocks:
            return
        covered = sum(len(b.tokens) for b in blocks)
        for level, fingerprint in enumerate(fingerprints):
            block, tokens = (blocks[0], len(blocks[0].tokens)) if level < SHARED_LEVELS else (blocks[-1], covered)
            known = self._held.get(fingerprint)
            if known is None or not known.index.holds(known.block) or known.tokens <= tokens:
                self._held[fingerprint] = _Held(prompt_cache.index, block, tokens)
            self._held.move_to_end(fingerprint)
        while len(self._held) > self._limit:
            self._held.popitem(last=False)

    def held(self) -> dict[str, int]:
        """Fingerprint -> prompt tokens cached, for the prefixes still held; forgets the rest."""
        for fingerprint in [f for f, h in self._held.items() if not h.index.holds(h.block)]:
            del self._held[fingerprint]
        return {fingerprint: h.tokens for fingerprint, h in self._held.items()}

    def publish(self, pipe, ttl: int):
        """Queue on `pipe` what changed since the last publication; `lost()` if it then fails."""
        held = self.held()
        published = self._published
        if published is None:
            pipe.delete(self.key)
            published = {}
        gone = [f for f in published if f not in held]
        changed = {f: tokens for f, tokens in held.items() if published.get(f) != tokens}
        if gone:
            pipe.hdel(self.key, *gone)
        if changed:
            pipe.hset(self.key, mapping=changed)
        pipe.expire(self.key, ttl)
        self._published = held

    def lost(self):
        """The last publication may not have reached Redis: the next one rewrites the hash."""
        self._published = None
