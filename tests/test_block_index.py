"""The prompt cache's index, without MLX: payloads are (start, end) ranges."""

import random

from cache.block_index import BlockIndex


def index(block_size=4, budget=10_000):
    return BlockIndex(block_size=block_size, budget_bytes=budget)


def add(idx, tokens, per_token=1):
    made = []

    def payload(start, end):
        made.append((start, end))
        return (start, end), (end - start) * per_token

    idx.insert(tokens, payload)
    return made


def test_miss_on_an_empty_index():
    match = index().match([1, 2, 3, 4, 5])
    assert match.length == 0 and match.blocks == []


def test_exact_and_partial_hits_are_token_granular():
    idx = index()
    add(idx, list(range(10)))  # blocks [0..3], [4..7], [8, 9]
    assert idx.match(list(range(10))).length == 10
    # Diverges inside the second block: its first two tokens are still reused.
    match = idx.match([0, 1, 2, 3, 4, 5, 99, 98])
    assert match.length == 6 and match.tail == 2 and len(match.blocks) == 2
    # Diverges at the very first token.
    assert idx.match([7, 1, 2]).length == 0


def test_limit_keeps_at_least_one_token_to_prefill():
    idx = index()
    tokens = list(range(8))
    add(idx, tokens)
    assert idx.match(tokens, limit=len(tokens) - 1).length == 7


def test_shared_prefixes_share_blocks():
    idx = index()
    system = list(range(100, 116))  # four whole blocks
    first = add(idx, system + [1, 2, 3, 4, 5])
    second = add(idx, system + [9, 8, 7])
    assert first[:4] == [(0, 4), (4, 8), (8, 12), (12, 16)]
    assert second == [(16, 19)], "the shared prefix was cached twice"
    assert idx.nbytes == 16 + 5 + 3


def test_extending_a_partial_block_replaces_it():
    idx = index()
    add(idx, [1, 2, 3, 4, 5, 6])  # [1..4] + partial [5, 6]
    add(idx, [1, 2, 3, 4, 5, 6, 7, 8, 9])  # [5..8] supersedes [5, 6]
    assert idx.nbytes == 4 + 4 + 1
    assert idx.match([1, 2, 3, 4, 5, 6, 7, 8, 9]).length == 9


def test_eviction_takes_least_recently_used_leaves_and_keeps_shared_prefixes():
    idx = index(budget=1000)
    system = list(range(100, 108))
    add(idx, system + [1, 1, 1, 1])
    add(idx, system + [2, 2, 2, 2])
    idx.match(system + [1, 1, 1, 1])  # conversation 1 is now the more recent
    idx.budget_bytes = 12
    assert idx.evict() == 1
    assert idx.match(system + [2, 2, 2, 2]).length == 8, "the shared prefix must survive"
    assert idx.match(system + [1, 1, 1, 1]).length == 12
    assert idx.nbytes == 12


def test_pinned_blocks_are_not_evicted():
    idx = index(budget=1000)
    add(idx, [1, 2, 3, 4, 5, 6, 7, 8])
    match = idx.match([1, 2, 3, 4, 5, 6, 7, 8])
    idx.pin(match.blocks)
    assert idx.evict(budget_bytes=0) == 0 and idx.nbytes == 8
    idx.unpin(match.blocks)
    assert idx.evict(budget_bytes=0) == 2 and idx.nbytes == 0 and len(idx) == 0


def test_budget_is_never_exceeded_after_evict_under_random_traffic():
    rng = random.Random(0)
    idx = index(block_size=8, budget=400)
    prefixes = [[rng.randrange(1000) for _ in range(40)] for _ in range(3)]
    for _ in range(200):
        tokens = rng.choice(prefixes) + [rng.randrange(1000) for _ in range(rng.randrange(1, 60))]
        match = idx.match(tokens, limit=len(tokens) - 1)
        assert tokens[:match.length] == _tokens_of(match)
        add(idx, tokens)
        idx.evict()
        assert idx.nbytes <= 400
        assert idx.nbytes == sum(b.nbytes for b in idx._blocks.values())


def _tokens_of(match):
    out = []
    for block in match.blocks[:-1]:
        out.extend(block.tokens)
    if match.blocks:
        out.extend(match.blocks[-1].tokens[:match.tail])
    return out


class Recorder:
    def __init__(self):
        self.added, self.removed = [], []

    def added_block(self, block):
        self.added.append(block.digest)

    def removed_block(self, block):
        self.removed.append(block.digest)


def test_a_block_is_named_by_its_content_and_whole_prefix_alike_in_every_index():
    one, other = index(), index()
    add(one, [1, 2, 3, 4, 5, 6])
    add(other, [1, 2, 3, 4, 5, 6])
    add(other, [9, 2, 3, 4, 5, 6])
    [a1, a2] = one.match([1, 2, 3, 4, 5, 6]).blocks
    [b1, b2] = other.match([1, 2, 3, 4, 5, 6]).blocks
    [_, c2] = other.match([9, 2, 3, 4, 5, 6]).blocks
    assert (a1.digest, a2.digest) == (b1.digest, b2.digest)
    assert c2.tokens == a2.tokens and c2.digest != a2.digest  # same tokens, another prefix
    assert a2.parent_digest == a1.digest and a1.parent_digest == b""


def test_the_listener_hears_of_every_block_made_and_dropped():
    idx, heard = index(), Recorder()
    idx.listener = type("Listener", (), {"added": lambda _, b: heard.added_block(b),
                                          "removed": lambda _, b: heard.removed_block(b)})()
    add(idx, [1, 2, 3, 4, 5])  # two blocks, the second partial
    add(idx, [1, 2, 3, 4, 5, 6, 7, 8])  # extends the partial one: it is dropped
    assert len(heard.added) == 3 and len(heard.removed) == 1
    idx.evict(budget_bytes=0)
    assert sorted(heard.removed) == sorted(heard.added)
