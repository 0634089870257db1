"""One model's batch with the bundled model: sequences that share steps must not change a token."""

import itertools

from mlx_lm import stream_generate
import pytest

from hearth.settings import BUNDLED_MODEL
from workers.engine import Engine
from workers.sampling import Sampling

GREEDY = Sampling(temperature=0.0)


@pytest.fixture(scope="module")
def engine():
    return Engine(BUNDLED_MODEL, cache_bytes=1 << 30)


@pytest.fixture(scope="module")
def babbler(tmp_path_factory):
    """The bundled model's shape with random weights: it never ends by itself."""
    from scripts.build_babbler import build_babbler

    return Engine(str(build_babbler(tmp_path_factory.mktemp("babbler"))), cache_bytes=1 << 30)


def fresh_engine_cache(engine):
    from cache.prompt_cache import PromptCache

    engine.prompt_cache = PromptCache(engine.model, budget_bytes=1 << 30)


def alone(engine, tokens, max_tokens):
    """What the model generates for `tokens` on its own, outside any batch or cache."""
    return [r.token for r in stream_generate(engine.model, engine.tokenizer, tokens, max_tokens=max_tokens)]


def prompt(engine, text, n):
    tokens = engine.encode(text * (n // 2 + 1))
    assert len(tokens) >= n
    return tokens[:n]


def run(batch, arrivals: dict, max_tokens: int, steps: dict | None = None) -> dict:
    """Step the batch until it is empty, adding each sequence at its step; returns key -> its outputs.

    `steps`, if given, collects key -> the step of each output.
    """
    outputs, step = {}, 0
    while len(batch) or any(at >= step for at, _ in arrivals.values()):
        for key, (at, tokens) in arrivals.items():
            if at == step:
                batch.add(key, tokens, GREEDY, max_tokens)
        for output in batch.step():
            outputs.setdefault(output.key, []).append(output)
            if steps is not None:
                steps.setdefault(output.key, []).append(step)
        step += 1
    return outputs


def tokens_of(outputs) -> list:
    return [o.token for o in outputs if o.token is not None]


def test_sequences_joining_at_different_steps_generate_what_each_would_alone(engine):
    fresh_engine_cache(engine)
    prompts = {f"s{i}": prompt(engine, words, n) for i, (words, n) in
               enumerate([("hello there ", 9), ("def parse(text): ", 300), ("list the files ", 40),
                          ("cache the prompt ", 700)])}
    batch = engine.batch(8, 64)
    outputs = run(batch, {key: (at, tokens) for (key, tokens), at in zip(prompts.items(), [0, 2, 5, 9])}, 40)
    for key, tokens in prompts.items():
        assert tokens_of(outputs[key]) == alone(engine, tokens, 40), key


def test_a_long_prompt_arriving_never_stops_the_running_sequences(babbler):
    engine = babbler
    batch = engine.batch(8, 128)
    short = prompt(engine, "hello there ", 12)
    long = prompt(engine, "the quick brown fox jumps over the lazy dog ", 2000)
    steps = {}
    outputs = run(batch, {"running": (0, short), "arriving": (4, long)}, 60, steps)
    prefill = [(step, o.prefilled[0]) for step, o in zip(steps["arriving"], outputs["arriving"]) if o.prefilled]
    decoding = {step for step, o in zip(steps["running"], outputs["running"]) if o.token is not None}
    # The long prompt went in chunks of at most 128 tokens, one a step, and in every one of
    # those steps the running sequence got its next token too.
    assert len(prefill) >= 2000 // 128
    assert all(b - a <= 128 for (_, a), (_, b) in itertools.pairwise(prefill))
    assert {step for step, _ in prefill} <= decoding
    assert tokens_of(outputs["arriving"]) == alone(engine, long, 60)


def test_long_prompts_arriving_together_share_one_chunk_a_step(babbler):
    engine = babbler
    fresh_engine_cache(engine)
    batch = engine.batch(8, 384)
    arrivals = {"running": (0, prompt(engine, "hello there ", 12))}
    for i, words in enumerate(["the quick brown fox ", "jumps over the lazy dog ", "a stitch in time "]):
        arrivals[f"subagent{i}"] = (3, prompt(engine, words, 900))
    steps = {}
    outputs = run(batch, arrivals, 40, steps)
    prefilled_by_step = {}
    for key in arrivals:
        if key == "running":
            continue
        done = 0
        for step, o in zip(steps[key], outputs[key]):
            if o.prefilled:
                prefilled_by_step[step] = prefilled_by_step.get(step, 0) + o.prefilled[0] - done
                done = o.prefilled[0]
    decoding = {step for step, o in zip(steps["running"], outputs["running"]) if o.token is not None}
    # Three prompts of 900 tokens went in one chunk a step in all (a third each), not a chunk
    # each, and the running sequence got its token in every one of those steps.
    assert sum(prefilled_by_step.values()) == 3 * 900
    assert max(prefilled_by_step.values()) <= 384, prefilled_by_step
    assert len(prefilled_by_step) >= 3 * 900 // 384
    assert set(prefilled_by_step) <= decoding
    assert tokens_of(outputs["subagent1"]) == alone(engine, arrivals["subagent1"][1], 40)


def test_prompts_sharing_a_prefix_arriving_together_prefill_it_once(engine):
    fresh_engine_cache(engine)
    batch = engine.batch(8, 256)
    tools = prompt(engine, "Run a shell command and return its output. ", 1500)
    first = tools + prompt(engine, "You are the main agent. ", 60)
    second = tools + prompt(engine, "You are a subagent that reads files. ", 80)
    with batch._generator.stats() as stats:
        outputs = run(batch, {"main": (0, first), "subagent": (1, second)}, 20)
    assert outputs["main"][0].reused == 0
    # The subagent waited for the main prompt's prefill and took the shared tools from the cache.
    assert outputs["subagent"][0].reused >= len(tools) - 1
    assert stats.prompt_tokens <= len(first) + (len(second) - len(tools)) + 2
    assert tokens_of(outputs["subagent"]) == alone(engine, second, 20)
    assert tokens_of(outputs["main"]) == alone(engine, first, 20)


@pytest.mark.parametrize("arrives", [1, 6], ids=["before the long prefill passes their prefix", "after"])
def test_a_prompt_sharing_the_start_of_a_long_prefill_waits_only_for_that_start(engine, arrives):
    """Claude Code's side requests share its tools, not its conversation: behind a long cold prompt
    they must not wait for all of it."""
    fresh_engine_cache(engine)
    batch = engine.batch(8, 128)
    tools = prompt(engine, "Run a shell command and return its output. ", 400)
    long = tools + prompt(engine, "A long file that the main agent reads. ", 2400)
    short = tools + prompt(engine, "You are a subagent that lists files. ", 30)
    # Another prompt prefilling beside the long one: the prefix is taken from a batch of several rows.
    arrivals = {"long": (0, long), "other": (0, prompt(engine, "An unrelated request. ", 700)),
                "short": (arrives, short)}
    steps = {}
    with batch._generator.stats() as stats:
        outputs = run(batch, arrivals, 10, steps)
    long_prefilled_at = max(step for step, o in zip(steps["long"], outputs["long"]) if o.prefilled)
    assert max(steps["short"]) < long_prefilled_at, "the short prompt waited for the whole long prefill"
    shared_blocks = len(tools) // 128 * 128
    assert outputs["short"][0].reused >= shared_blocks
    assert stats.prompt_tokens <= len(long) + 700 + len(short) - shared_blocks + 3
    for key, (_, tokens) in arrivals.items():
        assert tokens_of(outputs[key]) == alone(engine, tokens, 10), key


def test_a_waiting_prompt_taken_out_is_forgotten_and_its_leader_goes_on(engine):
    fresh_engine_cache(engine)
    batch = engine.batch(8, 128)
    tools = prompt(engine, "Run a shell command and return its output. ", 400)
    long = tools + prompt(engine, "A long file that the main agent reads. ", 1200)
    batch.add("long", long, GREEDY, 5)
    batch.add("short", tools + prompt(engine, "You are a subagent. ", 30), GREEDY, 5)
    batch.remove("short")  # cancelled while it waits: it has no K/V yet
    outputs = []
    while len(batch):
        outputs += batch.step()
    assert {o.key for o in outputs} == {"long"}
    assert tokens_of(outputs) == alone(engine, long, 5)


@pytest.mark.parametrize("batchable", [True, False], ids=["batch", "one at a time"])
def test_tokens_pushed_into_a_running_sequence_continue_it_exactly(babbler, monkeypatch, batchable):
    engine = babbler
    monkeypatch.setattr(engine, "batchable", batchable)
    batch = engine.batch(8, 64)
    start = prompt(engine, "think about it ", 30)
    batch.add("a", start, GREEDY, 100)
    batch.add("b", prompt(engine, "something else ", 20), GREEDY, 30)
    generated = []
    while len(generated) < 10:
        generated += [o.token for o in batch.step() if o.key == "a" and o.token is not None]
    forced = engine.encode("\n</think>\n\n")
    batch.extend("a", forced, 15)
    continued = []
    while "a" in batch:
        continued += [o.token for o in batch.step() if o.key == "a" and o.token is not None]
    assert continued == alone(engine, start + generated + forced, 15)


@pytest.mark.parametrize("batchable", [True, False], ids=["batch", "one at a time"])
def test_a_sequence_taken_out_leaves_its_kv_in_the_prompt_cache(babbler, monkeypatch, batchable):
    engine = babbler
    monkeypatch.setattr(engine, "batchable", batchable)
    fresh_engine_cache(engine)
    batch = engine.batch(8, 64)
    start = prompt(engine, "a conversation that stops early ", 200)
    batch.add("a", start, GREEDY, 100)
    generated = []
    while len(generated) < 7:
        generated += [o.token for o in batch.step() if o.token is not None]
    batch.remove("a")
    assert len(batch) == 0
    context = start + generated
    assert engine.prompt_cache.cached_length(context + [1]) == len(context)


def test_a_model_that_cannot_batch_decodes_one_sequence_at_a_time_with_the_same_tokens(babbler, monkeypatch):
    engine = babbler
    monkeypatch.setattr(engine, "batchable", False)  # as for a model whose cache layers have no merge()
    batch = engine.batch(8, 64)
    first, second = prompt(engine, "one conversation ", 150), prompt(engine, "another one ", 40)
    steps = {}
    outputs = run(batch, {"a": (0, first), "b": (0, second)}, 12, steps)
    assert tokens_of(outputs["a"]) == alone(engine, first, 12)
    assert tokens_of(outputs["b"]) == alone(engine, second, 12)
    # One at a time: the second started only after the first had ended.
    assert min(steps["b"]) > max(steps["a"])
    assert outputs["a"][0].reused is not None and outputs["b"][0].reused is not None
    # Its prompt, too, went a chunk a step.
    assert len([o for o in outputs["a"] if o.prefilled]) >= 150 // 64


def test_a_scripted_reply_for_the_fault_tests_writes_exactly_its_text(engine):
    import fakeredis

    from hearth.contract import FAULT_KEY
    from workers.faults import FaultInjectingEngine

    redis = fakeredis.FakeRedis()
    scripted = FaultInjectingEngine(engine, redis)
    batch = scripted.batch(8, 64)
    reply = '<tool_call>\n{"name": "Bash", "arguments": {"command": "ls"}}\n</tool_call>'
    redis.set(FAULT_KEY, "reply:" + reply)
    batch.add("scripted", prompt(engine, "hello there ", 12), GREEDY, 200)
    batch.add("free", prompt(engine, "another question here ", 12), GREEDY, 5)
    outputs = {}
    while len(batch):
        for output in batch.step():
            outputs.setdefault(output.key, []).append(output)
        if outputs.get("scripted") and outputs["scripted"][-1].finish == "stop" and "scripted" in batch:
            batch.remove("scripted")  # what the scheduler does once the job has its end
    decoder = engine.decoder()
    tokens = tokens_of(outputs["scripted"])
    assert "".join(decoder.add(t) for t in tokens[:-1]) + decoder.flush() == reply
    assert outputs["scripted"][-1].finish == "stop" and tokens[-1] in engine.tokenizer.eos_token_ids
    assert tokens_of(outputs["free"]) == alone(engine, prompt(engine, "another question here ", 12), 5)  # the other: the model's own


def test_a_scripted_reply_is_cut_by_its_max_tokens_as_the_models_own_words_are(engine):
    import fakeredis

    from hearth.contract import FAULT_KEY
    from workers.faults import FaultInjectingEngine

    redis = fakeredis.FakeRedis()
    batch = FaultInjectingEngine(engine, redis).batch(8, 64)
    reply = '<tool_call>\n{"name": "Bash", "arguments": {"command": "echo ' + "word " * 40 + '"}}\n</tool_call>'
    redis.set(FAULT_KEY, "reply:" + reply)
    batch.add("scripted", prompt(engine, "hello there ", 12), GREEDY, 9)
    outputs = []
    while "scripted" in batch and not (outputs and outputs[-1].finish):
        outputs += [output for output in batch.step() if output.key == "scripted"]
    tokens = tokens_of(outputs)
    assert len(tokens) == 9 and outputs[-1].finish == "length"
    assert tokens == engine.encode(reply)[:9]
