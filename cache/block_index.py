"""Which cached KV blocks a prompt can reuse: a radix tree over fixed-size token blocks.

Plain Python, no MLX: a block's payload (its K/V arrays) is opaque here.

Each block holds `block_size` consecutive tokens (the last of a chain may
hold fewer) and is keyed by (parent block, its exact tokens), so two
prompts share a block only when everything before it is identical, and
conversations with the same system prompt and tools share those blocks'
memory instead of each keeping a full copy (mlx-lm's LRUPromptCache keeps
one whole KV cache per entry).

Matching walks whole blocks by exact lookup, then, where the prompt
diverges, reuses the longest common prefix of one child block: reuse is
token-granular, not block-granular. Eviction removes least recently used
leaves first, so a prefix outlives every conversation built on it, and
blocks in use by a running job are pinned.
"""

from array import array
from collections import OrderedDict
from dataclasses import dataclass, field
import hashlib
import itertools

ROOT = 0


@dataclass(eq=False)
class Block:
    id: int
    parent: int
    tokens: tuple
    payload: object
    nbytes: int
    children: dict = field(default_factory=dict)  # tokens -> Block
    pins: int = 0
    # Names the block by content, its whole prefix included: the same in every process (a block store's file name).
    digest: bytes = b""
    parent_digest: bytes = b""


@dataclass
class Match:
    """The reusable prefix of a prompt: `blocks[:-1]` whole, the last one for `tail` tokens."""

    blocks: list
    length: int
    tail: int  # tokens used from the last block (== its length when whole)


@dataclass
class Counters:
    lookups: int = 0
    hits: int = 0
    prompt_tokens: int = 0
    reused_tokens: int = 0
    evicted_blocks: int = 0


class BlockIndex:
    def __init__(self, block_size: int, budget_bytes: int):
        if block_size < 1:
            raise ValueError("block_size must be positive")
        self.block_size = block_size
        self.budget_bytes = budget_bytes
        self.nbytes = 0
        self.peak_nbytes = 0
        self.counters = Counters()
        self._ids = itertools.count(ROOT + 1)
        self._root_children: dict = {}
        self._blocks: dict[int, Block] = {}
        # Leaves in least-recently-used order: the only blocks eviction may take.
        self._leaves: OrderedDict[int, None] = OrderedDict()
        # Told of every block made and dropped (cache/block_store.py keeps them on disk).
        self.listener = None

    def __len__(self):
        return len(self._blocks)

    def _children(self, block_id: int) -> dict:
        return self._root_children if block_id == ROOT else self._blocks[block_id].children

    def match(self, tokens, limit: int | None = None, touch: bool = True) -> Match:
        """The longest cached prefix of `tokens`, at most `limit` tokens long (`touch`: counts as a use)."""
        limit = len(tokens) if limit is None else min(limit, len(tokens))
        blocks, length, parent, tail = [], 0, ROOT, 0
        size = self.block_size
        while length + size <= limit:
            block = self._children(parent).get(tuple(tokens[length:length + size]))
            if block is None:
                break
            blocks.append(block)
            length += size
            parent, tail = block.id, size
        # Where whole blocks stop matching, a child may still share a prefix.
        best, best_common = None, 0
        for child in self._children(parent).values():
            common = _common_prefix(child.tokens, tokens, length, limit)
            if common > best_common:
                best, best_common = child, common
        if best is not None:
            blocks.append(best)
            length += best_common
            tail = best_common
        if touch:
            self._touch(blocks)
        return Match(blocks=blocks, length=length, tail=tail)

    def holds(self, block: Block) -> bool:
        """Is `block` still cached? (Ancestors outlive descendants, so its whole chain is.)"""
        return self._blocks.get(block.id) is block

    def record_lookup(self, prompt_tokens: int, reused: int):
        self.counters.lookups += 1
        self.counters.prompt_tokens += prompt_tokens
        self.counters.reused_tokens += reused
        self.counters.hits += reused > 0

    def insert(self, tokens, make_payload) -> list:
        """Cache `tokens`; `make_payload(start, end)` gives the K/V of positions [start, end).

        Only blocks not already cached are made. Returns the chain's blocks.
        """
        chain, parent, start = [], ROOT, 0
        size = self.block_size
        while start < len(tokens):
            piece = tuple(tokens[start:start + size])
            siblings = self._children(parent)
            block = siblings.get(piece)
            if block is None:
                payload, nbytes = make_payload(start, start + len(piece))
                parent_digest = self._blocks[parent].digest if parent != ROOT else b""
                block = Block(next(self._ids), parent, piece, payload, nbytes,
                              digest=chain_digest(parent_digest, piece), parent_digest=parent_digest)
                siblings[piece] = block
                self._blocks[block.id] = block
                self._leaves[block.id] = None
                self._leaves.pop(parent, None)
                self.nbytes += nbytes
                self._drop_shorter_siblings(block)
                if self.listener is not None:
                    self.listener.added(block)
            chain.append(block)
            parent, start = block.id, start + len(piece)
        self._touch(chain)
        self.peak_nbytes = max(self.peak_nbytes, self.nbytes)
        return chain

    def _drop_shorter_siblings(self, block: Block):
        # A partial sibling that this block extends is redundant: everything it matches, this matches.
        for sibling in list(self._children(block.parent).values()):
            if (sibling is not block and len(sibling.tokens) < len(block.tokens) and not sibling.children
                    and not sibling.pins and block.tokens[:len(sibling.tokens)] == sibling.tokens):
                self._remove(sibling)

    def pin(self, blocks):
        for block in blocks:
            block.pins += 1

    def unpin(self, blocks):
        for block in blocks:
            block.pins -= 1

    def evict(self, budget_bytes: int | None = None) -> int:
        """Drop least recently used unpinned leaves until within budget; returns blocks dropped."""
        budget = self.budget_bytes if budget_bytes is None else budget_bytes
        dropped = 0
        while self.nbytes > budget:
            victim = next((self._blocks[i] for i in self._leaves if not self._blocks[i].pins), None)
            if victim is None:
                break  # everything left is in use
            self._remove(victim)
            dropped += 1
        self.counters.evicted_blocks += dropped
        return dropped

    def _remove(self, block: Block):
        del self._children(block.parent)[block.tokens]
        del self._blocks[block.id]
        self._leaves.pop(block.id, None)
        self.nbytes -= block.nbytes
        if self.listener is not None:
            self.listener.removed(block)
        if block.parent != ROOT and not self._blocks[block.parent].children:
            # The parent became a leaf: it is as old as its last use, so it goes to the front.
            self._leaves[block.parent] = None
            self._leaves.move_to_end(block.parent, last=False)

    def _touch(self, blocks):
        # Deepest last: of one chain, the leaf is evicted before its ancestors.
        for block in blocks:
            if block.id in self._leaves:
                self._leaves.move_to_end(block.id)


def chain_digest(parent_digest: bytes, tokens) -> bytes:
    """A block's content name: its parent's, then its own tokens."""
    return hashlib.blake2b(parent_digest + array("q", tokens).tobytes(), digest_size=16).digest()


def common_prefix_length(a, b) -> int:
    """How many leading tokens two sequences share."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _common_prefix(block_tokens: tuple, tokens, start: int, limit: int) -> int:
    n = 0
    for a, b in zip(block_tokens, itertools.islice(tokens, start, limit)):
        if a != b:
            break
        n += 1
    return n
