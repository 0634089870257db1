"""The prompt cache with the bundled model: reuse must not change a single logit."""

import mlx.core as mx
from mlx_lm import load
from mlx_lm.models.cache import make_prompt_cache
import pytest

from cache.prompt_cache import PromptCache
from hearth.settings import BUNDLED_MODEL


@pytest.fixture(scope="module")
def model_and_tokenizer():
    return load(BUNDLED_MODEL)


def last_logits(model, tokens, kv=None):
    kv = kv if kv is not None else make_prompt_cache(model)
    logits = model(mx.array(tokens)[None], cache=kv)
    mx.eval(logits)
    return logits[0, -1], kv


def assert_continues_like_a_fresh_prefill(model, tokens, lease):
    """Prefilling the rest of `tokens` on the lease's K/V predicts what a full prefill does."""
    cached, _ = last_logits(model, tokens[lease.reused:], lease.kv)
    fresh, _ = last_logits(model, tokens)
    assert mx.allclose(cached, fresh, atol=1e-4).item()


def prefill_and_store(cache, model, tokens):
    """What a generation does to the cache: look up, prefill the rest, store."""
    lease = cache.lookup(tokens)
    last_logits(model, tokens[lease.reused:], lease.kv)
    cache.store(lease, tokens)
    return lease.reused


def prompt(tokenizer, text, n):
    tokens = tokenizer.encode(text * 200)
    assert len(tokens) >= n
    return tokens[:n]


@pytest.mark.parametrize("shared", [256, 300, 37])  # whole blocks, mid-block, within the first block
def test_logits_after_a_cache_hit_equal_a_fresh_prefill(model_and_tokenizer, shared):
    model, tokenizer = model_and_tokenizer
    first = prompt(tokenizer, "The quick brown fox jumps over the lazy dog. ", 400)
    second = first[:shared] + prompt(tokenizer, "def main():\n    return 42\n", 120)

    cache = PromptCache(model, budget_bytes=1 << 30, block_tokens=64)
    lease = cache.lookup(first)
    assert lease.reused == 0
    last_logits(model, first, lease.kv)
    cache.store(lease, first)

    lease = cache.lookup(second)
    assert lease.reused == shared
    assert_continues_like_a_fresh_prefill(model, second, lease)
    cache.release(lease)


def test_a_full_hit_still_prefills_one_token(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    tokens = prompt(tokenizer, "hello world ", 200)
    cache = PromptCache(model, budget_bytes=1 << 30, block_tokens=64)
    prefill_and_store(cache, model, tokens)
    lease = cache.lookup(tokens)
    assert lease.reused == len(tokens) - 1
    assert_continues_like_a_fresh_prefill(model, tokens, lease)  # the last token
    cache.release(lease)


def test_conversations_sharing_a_prefix_share_its_memory(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    system = prompt(tokenizer, "You are a careful coding assistant. ", 512)
    cache = PromptCache(model, budget_bytes=1 << 30, block_tokens=64)
    per_token = None
    for i in range(5):
        conversation = system + prompt(tokenizer, f"Question number {i} about recursion? ", 64)
        prefill_and_store(cache, model, conversation)
        if per_token is None:
            per_token = cache.index.nbytes / len(conversation)
    # One copy of the 512-token prefix plus five 64-token tails, not five full copies.
    assert cache.index.nbytes == pytest.approx(per_token * (512 + 5 * 64), rel=0.01)


def test_the_budget_holds(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    cache = PromptCache(model, budget_bytes=200_000, block_tokens=32)
    for i in range(6):
        tokens = prompt(tokenizer, f"conversation {i} is about topic {i}. ", 150)
        prefill_and_store(cache, model, tokens)
        assert cache.index.nbytes <= 200_000
    assert cache.stats()["evicted_blocks"] > 0


def stored_cache(model, directory, budget=1 << 30, name="tiny"):
    from cache.block_store import BlockStore

    cache, store = PromptCache(model, budget_bytes=budget, block_tokens=64), BlockStore(directory, name)
    store.attach(cache)
    return cache, store


def test_blocks_reach_disk_as_they_are_made_and_a_restart_finds_them(model_and_tokenizer, tmp_path, caplog):
    model, tokenizer = model_and_tokenizer
    tokens = prompt(tokenizer, "persist me across restarts ", 300)
    before, store = stored_cache(model, tmp_path)
    prefill_and_store(before, model, tokens)
    store.flush()  # the writer thread has caught up; no save was asked for
    assert len(list(tmp_path.glob("*.npz"))) == len(before.index) == 5  # 300 tokens in blocks of 64

    # A restart (a crash leaves the same files: nothing is written at shutdown).
    after, _ = stored_cache(model, tmp_path)
    follow_up = tokens + prompt(tokenizer, "and one more question ", 20)
    lease = after.lookup(follow_up)
    assert lease.reused == len(tokens)
    assert_continues_like_a_fresh_prefill(model, follow_up, lease)

    # Blocks made for another model are ignored, with a warning.
    other, _ = stored_cache(model, tmp_path, name="another-model")
    assert "ignoring prompt-cache block" in caplog.text and len(other.index) == 0


def test_the_store_holds_what_the_cache_holds_a_shared_prefix_once(model_and_tokenizer, tmp_path):
    model, tokenizer = model_and_tokenizer
    system = prompt(tokenizer, "Shared tools and instructions. ", 256)
    conversations = [system + prompt(tokenizer, f"conversation {i} asks something. ", 70) for i in range(3)]
    before, store = stored_cache(model, tmp_path)
    for tokens in conversations:
        prefill_and_store(before, model, tokens)
    store.flush()
    assert len(list(tmp_path.glob("*.npz"))) == 4 + 3 * 2  # the system prompt's 4 blocks written once

    after, after_store = stored_cache(model, tmp_path)
    for tokens in conversations:
        follow_up = tokens + prompt(tokenizer, "next ", 5)
        lease = after.lookup(follow_up)
        assert lease.reused == len(tokens)
        assert_continues_like_a_fresh_prefill(model, follow_up, lease)
        after.release(lease)
    # What the cache drops, the disk drops.
    after.index.evict(budget_bytes=after.index.nbytes // 2)
    after_store.flush()
    assert len(list(tmp_path.glob("*.npz"))) == len(after.index) < 10


def test_a_write_cut_short_or_a_block_without_its_parent_is_never_loaded(model_and_tokenizer, tmp_path):
    model, tokenizer = model_and_tokenizer
    tokens = prompt(tokenizer, "half written ", 200)
    before, store = stored_cache(model, tmp_path)
    prefill_and_store(before, model, tokens)
    store.flush()
    [first] = before.index.match(tokens[:64]).blocks
    (tmp_path / f"{first.digest.hex()}.npz").unlink()  # say the crash came before the first block was written
    (tmp_path / "torn.partial").write_bytes(b"PK")
    after, _ = stored_cache(model, tmp_path)
    assert len(after.index) == 0 and not list(tmp_path.iterdir())


def test_untrimmable_caches_reuse_a_snapshot_at_the_end_of_system_and_tools():
    from mlx_lm import stream_generate
    from mlx_lm.models.cache import KVCache

    from hearth.contract import GenerationRequest
    from workers.engine import Engine
    from workers.sampling import Sampling

    class UntrimmableKVCache(KVCache):  # stands in for rotating or state-space caches
        def is_trimmable(self):
            return False

    engine = Engine(BUNDLED_MODEL, cache_bytes=1 << 30)
    engine.model.make_cache = lambda: [UntrimmableKVCache() for _ in engine.model.layers]
    engine.prompt_cache = PromptCache(engine.model, budget_bytes=1 << 30)
    assert not engine.prompt_cache.blockwise
    tools = [{"type": "function", "function": {"name": "Bash", "description": "Run a command. " * 40,
                                               "parameters": {"type": "object", "properties": {}}}}]

    def run(question):
        request = GenerationRequest(model=BUNDLED_MODEL, requested_model="m", max_tokens=5, temperature=0.0,
                                    system="You are a careful assistant. " * 30, tools=tools,
                                    messages=[{"role": "user", "content": question}])
        prompt = engine.render(request)
        batch = engine.batch(4, 64)
        batch.add("q", prompt.tokens, Sampling(temperature=0.0), 5, prompt.static_tokens)
        outputs = []
        while len(batch):
            outputs += batch.step()
        return prompt, outputs

    first, _ = run("What is a closure?")
    assert first.static_tokens > 200
    second, outputs = run("And a generator?")
    assert second.static_tokens == first.static_tokens
    assert outputs[0].reused == second.static_tokens
    fresh = [r.token for r in stream_generate(engine.model, engine.tokenizer, second.tokens, max_tokens=5)]
    assert [o.token for o in outputs if o.token is not None] == fresh


@pytest.mark.parametrize("tools_first", [True, False])
def test_conversations_with_the_same_tools_share_their_prefix_when_tools_come_first(tools_first):
    from cache.block_index import common_prefix_length
    from hearth.contract import GenerationRequest
    from workers.engine import Engine

    engine = Engine(BUNDLED_MODEL, cache_bytes=1 << 30, tools_first=tools_first)
    tools = [{"type": "function", "function": {"name": "Bash", "description": "Run a command. " * 50,
                                               "parameters": {"type": "object", "properties": {}}}}]

    def render(system):
        return engine.render(GenerationRequest(model="m", requested_model="m", max_tokens=5, system=system,
                                               tools=tools, messages=[{"role": "user", "content": "hi"}])).tokens

    main, subagent = render("You are the main agent."), render("You are a subagent with another job.")
    shared = common_prefix_length(main, subagent)
    tools_tokens = len(engine.tokenizer.encode("Run a command. " * 50))
    if tools_first:
        assert shared > tools_tokens, "the tools are not a shared prefix"
    else:
        assert shared < 10, "with the template's own order the system prompt comes first"
