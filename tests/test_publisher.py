"""The worker's event publisher: one round trip per event, retried through a Redis blip."""

import fakeredis
import pytest
from redis.exceptions import ConnectionError

from hearth.contract import Event, cancel_key, events_key, partial_key
from workers import publisher as publisher_module
from workers.publisher import EventPublisher, flush


class FlakyPipelines:
    """Redis whose next `failures` pipeline executions fail, the first one after the writes landed."""

    def __init__(self, redis, failures):
        self.redis, self.failures = redis, failures

    def pipeline(self, transaction=False):
        real = self.redis.pipeline(transaction=transaction)
        outer = self

        class Pipe:
            def __getattr__(self, name):
                return getattr(real, name)

            def execute(self, raise_on_error=True):
                if outer.failures:
                    outer.failures -= 1
                    if outer.failures == 0:
                        real.execute()  # the writes happened; only the reply was lost
                    raise ConnectionError("connection reset")
                return real.execute(raise_on_error=raise_on_error)

        return Pipe()

    def __getattr__(self, name):
        return getattr(self.redis, name)


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch):
    monkeypatch.setattr(publisher_module.time, "sleep", lambda s: None)


def test_events_survive_a_redis_blip_without_gaps_or_duplicates():
    redis = fakeredis.FakeRedis()
    publisher = EventPublisher(FlakyPipelines(redis, failures=3), "job1", ttl=60)
    for i in range(3):
        publisher.publish("delta", {"i": i})
    events = [Event.from_json(f[b"e"]) for _, f in redis.xrange(events_key("job1"))]
    assert [(e.seq, e.data["i"]) for e in events] == [(1, 0), (2, 1), (3, 2)]


def test_a_polls_partial_text_survives_a_redis_blip_once():
    redis = fakeredis.FakeRedis()
    publisher = EventPublisher(FlakyPipelines(redis, failures=2), "job1", ttl=60)
    for index, (kind, piece) in enumerate([("thinking", "Plan ▸ "), ("text", "Hello "), ("text", "wörld")]):
        publisher.publish("delta", {"index": index, "delta": {"type": f"{kind}_delta", kind: piece}})
    assert redis.get(partial_key("job1", "thinking")).decode() == "Plan ▸ "
    assert redis.get(partial_key("job1", "text")).decode() == "Hello wörld"
    assert 0 < redis.ttl(partial_key("job1", "text")) <= 60

    # Resumed after a suspension, a new publisher goes on where the text ended.
    resumed = EventPublisher(redis, "job1", ttl=60, seq=publisher.seq)
    resumed.publish("delta", {"index": 2, "delta": {"type": "text_delta", "text": "!"}})
    assert redis.get(partial_key("job1", "text")).decode() == "Hello wörld!"


def test_a_long_outage_fails_the_job():
    publisher = EventPublisher(FlakyPipelines(fakeredis.FakeRedis(), failures=100), "job1", ttl=60)
    with pytest.raises(ConnectionError):
        publisher.publish("delta", {})


def test_the_cancel_flag_rides_on_the_same_round_trip():
    redis = fakeredis.FakeRedis()
    publisher = EventPublisher(redis, "job1", ttl=60)
    publisher.publish("delta", {})
    assert not publisher.cancel_requested
    redis.set(cancel_key("job1"), 1)
    publisher.publish("delta", {})
    assert publisher.cancel_requested


def test_many_jobs_and_the_queue_lengths_share_one_round_trip():
    redis = fakeredis.FakeRedis()
    publishers = [EventPublisher(redis, f"job{i}", ttl=60) for i in range(3)]
    for i, publisher in enumerate(publishers):
        for n in range(i + 1):
            publisher.stage("block_stop", {"n": n})
    redis.rpush("rq:queue:interactive", "other-job")
    redis.set(cancel_key("job1"), 1)
    pipelines = []
    real_pipeline = redis.pipeline

    def counting_pipeline(*args, **kwargs):
        pipelines.append(True)
        return real_pipeline(*args, **kwargs)

    redis.pipeline = counting_pipeline
    assert flush(redis, publishers, ("rq:queue:interactive", "rq:queue:background")) == [1, 0]
    assert len(pipelines) == 1
    for i, publisher in enumerate(publishers):
        events = [Event.from_json(f[b"e"]) for _, f in redis.xrange(events_key(f"job{i}"))]
        assert [(e.seq, e.data["n"]) for e in events] == [(n + 1, n) for n in range(i + 1)]
        assert publisher.pending == []
    assert [p.cancel_requested for p in publishers] == [False, True, False]


class Interrupted(BaseException):
    """What a signal handler raises mid-send (rq's cold shutdown raises SystemExit)."""


@pytest.mark.parametrize("landed", [False, True])
def test_a_publish_cut_short_leaves_no_gap_before_the_terminal_event(landed):
    redis = fakeredis.FakeRedis()
    publisher = EventPublisher(redis, "job1", ttl=60)
    publisher.publish("delta", {"i": 0})

    class CutShort:
        def pipeline(self, transaction=False):
            real = redis.pipeline(transaction=transaction)

            class Pipe:
                def __getattr__(self, name):
                    return getattr(real, name)

                def execute(self, raise_on_error=True):
                    if landed:
                        real.execute()  # the event reached the log before the signal
                    raise Interrupted()

            return Pipe()

        def __getattr__(self, name):
            return getattr(redis, name)

    publisher._redis = CutShort()
    with pytest.raises(Interrupted):
        publisher.publish("delta", {"i": 1})
    publisher._redis = redis
    publisher.publish_error("api_error", "the worker shut down")

    events = [Event.from_json(f[b"e"]) for _, f in redis.xrange(events_key("job1"))]
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert len(events) == (3 if landed else 2) and events[-1].type == "error"


def test_deltas_that_continue_a_block_are_merged_until_the_next_flush():
    redis = fakeredis.FakeRedis()
    publisher = EventPublisher(redis, "job1", ttl=60)
    pieces = [publisher.stage("block_start", {"index": 0, "block": {"type": "text", "text": ""}})]
    assert publisher.urgent
    for text in ["Hel", "lo", " there"]:
        pieces.append(publisher.stage("delta", {"index": 0, "delta": {"type": "text_delta", "text": text}}))
    flush(redis, [publisher])
    publisher.stage("delta", {"index": 0, "delta": {"type": "text_delta", "text": "!"}})
    assert not publisher.urgent
    publisher.stage("block_stop", {"index": 0})
    flush(redis, [publisher])
    events = [Event.from_json(f[b"e"]) for _, f in redis.xrange(events_key("job1"))]
    assert [(e.seq, e.type) for e in events] == [(1, "block_start"), (2, "delta"), (3, "delta"), (4, "block_stop")]
    assert events[1].data["delta"]["text"] == "Hello there" and events[2].data["delta"]["text"] == "!"
    # Each staged piece is still what the job assembles from.
    assert [p.data["delta"]["text"] for p in pieces[1:]] == ["Hel", "lo", " there"]
