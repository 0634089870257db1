"""Cache affinity: naming prefixes (hearth/affinity.py), what a worker holds (workers/affinity.py),
where the API sends a job (api/placement.py), and the scheduler recording each ended job."""

import fakeredis
import pytest

from api.live_workers import LiveWorker
from api.placement import Placement
from cache.block_index import BlockIndex
from hearth.affinity import SHARED_LEVELS, fingerprints
from hearth.contract import QUEUE_INTERACTIVE, affinity_key, model_queue, worker_queue
from tests.conftest import ScriptedEngine
from tests.test_scheduler import enqueue
from workers.affinity import HeldPrefixes

TOOLS = [{"name": "Bash", "input_schema": {"type": "object"}}]


def turn(n: int, system: str = "be brief", tools=TOOLS) -> dict:
    messages = []
    for i in range(1, n + 1):
        messages.append({"role": "user", "content": f"step {i}"})
        if i < n:
            messages.append({"role": "assistant", "content": f"did {i}"})
    return {"model": "m", "tools": tools, "system": system, "messages": messages}


def test_a_later_turn_begins_with_every_fingerprint_of_the_turn_before():
    first, second = fingerprints(turn(1), "m"), fingerprints(turn(2), "m")
    assert len(first) == SHARED_LEVELS + 1 and len(second) == SHARED_LEVELS + 3
    assert second[:len(first)] == first


def test_conversations_share_only_what_they_have_in_common():
    one, other_system, other_model = (fingerprints(turn(1), "m"), fingerprints(turn(1, system="be kind"), "m"),
                                      fingerprints(turn(1), "m2"))
    assert one[0] == other_system[0] and one[1] != other_system[1]  # same tools, another system prompt
    assert not set(one) & set(other_model)
    # Key order inside a block does not change a fingerprint; content does.
    reordered = turn(1, tools=[{"input_schema": {"type": "object"}, "name": "Bash"}])
    assert fingerprints(reordered, "m") == one


class BlockCache:
    """A prompt cache's block index, with nothing else: what HeldPrefixes reads."""

    def __init__(self, block_size=4, budget=10**9):
        self.index = BlockIndex(block_size, budget)

    def store(self, tokens):
        self.index.insert(tokens, lambda start, end: (None, end - start))

    def cached_blocks(self, tokens):
        return self.index.match(tokens, touch=False).blocks


def test_held_prefixes_name_the_tokens_cached_and_forget_what_was_evicted():
    cache, held = BlockCache(), HeldPrefixes("w1")
    prompt = list(range(10))
    cache.store(prompt)
    prints = fingerprints(turn(1), "m")
    held.record(prints, cache, prompt)
    # The shared levels are held by the first block, the conversation by the whole chain.
    assert held.held() == {prints[0]: 4, prints[1]: 4, prints[2]: 10}
    cache.index.evict(budget_bytes=4)  # the chain's tail goes first
    assert held.held() == {prints[0]: 4, prints[1]: 4}
    cache.index.evict(budget_bytes=0)
    assert held.held() == {}


def test_held_prefixes_publish_only_the_changes_and_rewrite_after_a_lost_publication():
    redis, cache, held = fakeredis.FakeRedis(), BlockCache(), HeldPrefixes("w1")
    prompt = list(range(10))
    cache.store(prompt)
    prints = fingerprints(turn(1), "m")
    held.record(prints, cache, prompt)
    with redis.pipeline() as pipe:
        held.publish(pipe, ttl=60)
        pipe.execute()
    assert {k.decode(): int(v) for k, v in redis.hgetall(affinity_key("w1")).items()} == held.held()
    assert 0 < redis.ttl(affinity_key("w1")) <= 60

    cache.index.evict(budget_bytes=4)
    with redis.pipeline() as pipe:
        held.publish(pipe, ttl=60)
        assert [command[0][0] for command in pipe.command_stack] == ["HDEL", "EXPIRE"]  # no rewrite
        pipe.execute()
    assert prints[2].encode() not in redis.hgetall(affinity_key("w1"))

    redis.hset(affinity_key("w1"), "stale", 1)
    held.lost()  # say the last pipeline failed: Redis's copy is unknown
    with redis.pipeline() as pipe:
        held.publish(pipe, ttl=60)
        pipe.execute()
    assert set(redis.hgetall(affinity_key("w1"))) == {prints[0].encode(), prints[1].encode()}


def worker(name, slots=2, jobs=()):
    return LiveWorker(name=name, models={"m": "/models/m"}, slots=slots, jobs=list(jobs), host="mac")


class Workers:
    def __init__(self, *workers):
        self.workers = {w.name: w for w in workers}

    def serving(self, key):
        return [w for w in self.workers.values() if key in w.models]


@pytest.fixture
def redis():
    return fakeredis.FakeRedis()


def hold(redis, worker_name, request, depth, tokens=500):
    redis.hset(affinity_key(worker_name), mapping={p: tokens for p in fingerprints(request, "m")[:depth]})


def test_a_later_turn_goes_to_the_worker_holding_the_conversation(redis):
    placement = Placement(redis, Workers(worker("a"), worker("b")), backlog=2)
    hold(redis, "a", turn(1), depth=SHARED_LEVELS)  # a holds the shared system prompt only
    hold(redis, "b", turn(1), depth=SHARED_LEVELS + 1)  # b served turn 1
    request = turn(2)
    assert placement.queue_for(request, QUEUE_INTERACTIVE) == worker_queue(QUEUE_INTERACTIVE, "b")
    assert request["fingerprints"] == fingerprints(turn(2), "m")  # the worker records them
    # Nobody holds a new conversation's messages: the deepest shared match wins.
    assert placement.queue_for(turn(1, system="new"), QUEUE_INTERACTIVE) == worker_queue(QUEUE_INTERACTIVE, "a")


def test_without_a_holder_or_a_second_worker_the_job_goes_to_its_models_queue(redis):
    assert Placement(redis, Workers(worker("a"), worker("b")), 2).queue_for(turn(2), QUEUE_INTERACTIVE) \
        == model_queue(QUEUE_INTERACTIVE, "m")
    hold(redis, "a", turn(1), depth=3)
    assert Placement(redis, Workers(worker("a")), 2).queue_for(turn(2), QUEUE_INTERACTIVE) \
        == model_queue(QUEUE_INTERACTIVE, "m")


def test_a_busy_holder_gets_its_conversation_within_the_backlog_but_not_a_shared_prefix(redis):
    busy = [{"queue": "interactive:m"}, {"queue": "interactive:m"}]  # both slots taken
    placement = Placement(redis, Workers(worker("a", jobs=busy), worker("b")), backlog=1)
    hold(redis, "a", turn(1), depth=SHARED_LEVELS + 1)
    assert placement.queue_for(turn(2), QUEUE_INTERACTIVE) == worker_queue(QUEUE_INTERACTIVE, "a")
    redis.rpush("rq:queue:" + worker_queue(QUEUE_INTERACTIVE, "a"), "waiting-job")  # the backlog is full
    assert placement.queue_for(turn(2), QUEUE_INTERACTIVE) == model_queue(QUEUE_INTERACTIVE, "m")
    # A shared prefix alone never queues a job behind a busy worker while another is free.
    another = turn(1)
    another["messages"][0]["content"] = "another task"
    assert placement.queue_for(another, QUEUE_INTERACTIVE) == model_queue(QUEUE_INTERACTIVE, "m")


def test_a_job_that_finished_by_itself_records_its_prefix(redis, jobs, make_worker):
    recorded = []

    class Recorder:
        def record(self, prints, prompt_cache, prompt):
            recorded.append((prints, list(prompt)))

    job_ids = enqueue(jobs, 2, fingerprints=["f-tools", "f-system", "f-first"])
    worker = make_worker(ScriptedEngine(["an ", "answer"]))
    worker.batch_scheduler.held_prefixes = Recorder()
    worker.work(burst=True)
    assert len(recorded) == len(job_ids)
    assert all(prints == ["f-tools", "f-system", "f-first"] and prompt for prints, prompt in recorded)
    assert all(t < ScriptedEngine.FIRST_TOKEN for _, prompt in recorded for t in prompt)  # the prompt only
