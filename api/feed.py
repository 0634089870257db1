"""A job's events, in order, with no gaps and no duplicates.

Live events come from the job's pub/sub channel, which is at most once: a
subscriber that joins late, reconnects, or has messages dropped by an output
buffer limit would lose deltas. Every event is also in the job's log (a Redis
Stream keyed by sequence number), so any gap is read back from there. This is
the history-and-recovery pattern of Centrifugo.
"""

import contextlib
from typing import AsyncIterator

import anyio

from redis.asyncio import Redis
from redis.exceptions import RedisError

from hearth.contract import Event, events_key, live_channel, stream_id


RESUBSCRIBE_DELAYS = (0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 4.0, 4.0)


class JobFeed:
    """Subscribe first (`async with`), then enqueue, then iterate: nothing is missed.

    Iteration yields events, and None whenever `idle_after` seconds pass with
    nothing new: the caller's moment to ping and to check the job is alive.
    """

    def __init__(self, redis: Redis, job_id: str, after_seq: int = 0, idle_after: float = 5.0):
        self._redis = redis
        self.job_id = job_id
        self.last_seq = after_seq
        self._idle_after = idle_after
        self._pubsub = None
        self.ended = False

    async def __aenter__(self) -> "JobFeed":
        self._pubsub = self._redis.pubsub()
        await self._pubsub.subscribe(live_channel(self.job_id))
        return self

    async def __aexit__(self, *exc_info):
        try:
            # Unsubscribe cleanly if Redis is there; the connection is going away regardless.
            with contextlib.suppress(RedisError):
                await self._pubsub.unsubscribe()
        finally:
            await self._pubsub.aclose()

    async def events(self) -> AsyncIterator[Event | None]:
        """Through a Redis restart too: subscribe again and go on from the log."""
        while True:
            try:
                async for event in self._events():
                    yield event
                return
            except RedisError:
                await self._resubscribe()  # gives up, raising, after ~15 s

    async def _events(self) -> AsyncIterator[Event | None]:
        async for event in self._from_log():
            yield event
        while not self.ended:
            message = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=self._idle_after)
            if message is None:
                # Quiet: read the log in case the channel dropped something.
                caught_up = False
                async for event in self._from_log():
                    caught_up = True
                    yield event
                if not caught_up:
                    yield None
                continue
            event = Event.from_json(message["data"])
            if event.seq <= self.last_seq:
                continue
            if event.seq > self.last_seq + 1:
                async for missed in self._from_log():
                    yield missed
                continue
            yield self._advance(event)

    async def _resubscribe(self):
        """Redis went away (a restart): subscribe again, with backoff; give up after ~15 s."""
        for delay in RESUBSCRIBE_DELAYS:
            await anyio.sleep(delay)
            try:
                await self._pubsub.aclose()
                self._pubsub = self._redis.pubsub()
                await self._pubsub.subscribe(live_channel(self.job_id))
                return
            except RedisError:
                continue
        raise RedisError(f"Redis unreachable while streaming job {self.job_id}")

    async def _from_log(self) -> AsyncIterator[Event]:
        entries = await self._redis.xrange(events_key(self.job_id), min=stream_id(self.last_seq + 1))
        for _, fields in entries:
            event = Event.from_json(fields[b"e"])
            if event.seq == self.last_seq + 1:
                yield self._advance(event)
            if self.ended:
                return

    def _advance(self, event: Event) -> Event:
        self.last_seq = event.seq
        self.ended = event.is_terminal
        return event

    async def other_listeners(self) -> int:
        """Subscribers to the job's live channel (call after closing this feed)."""
        counts = await self._redis.pubsub_numsub(live_channel(self.job_id))
        return int(counts[0][1]) if counts else 0

    async def oldest_retained(self) -> int | None:
        """Sequence number of the first event still in the log, if any."""
        first = await self._redis.xrange(events_key(self.job_id), count=1)
        return Event.from_json(first[0][1][b"e"]).seq if first else None
