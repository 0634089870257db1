"""A job's events, in order, with no gaps and no duplicates.

Live events come from the job's pub/sub channel (through the API process's
one hub connection, api/live_hub.py), which is at most once: a listener that
joins late, or whose connection dropped, would lose deltas. Every event is
also in the job's log (a Redis Stream keyed by sequence number), so any gap
is read back from there. This is the history-and-recovery pattern of
Centrifugo.
"""

import asyncio
from collections.abc import AsyncIterator

import anyio
from redis.asyncio import Redis
from redis.exceptions import RedisError

from api.live_hub import RESYNC, LiveHub
from hearth.contract import Event, events_key, live_channel, stream_id

# Backoff between log reads while Redis is unreachable (about 15 s in all), then the feed gives up.
RETRY_DELAYS = (0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 4.0, 4.0)


class JobFeed:
    """Listen first (`async with`), then enqueue, then iterate: nothing is missed.

    Iteration yields events, and None whenever `idle_after` seconds pass with
    nothing new: the caller's moment to ping and to check the job is alive.
    """

    def __init__(self, redis: Redis, hub: LiveHub, job_id: str, after_seq: int = 0, idle_after: float = 5.0):
        self._redis = redis
        self._hub = hub
        self.job_id = job_id
        self._channel = live_channel(job_id)
        self.last_seq = after_seq
        self._idle_after = idle_after
        self._queue = None
        self.ended = False

    async def __aenter__(self) -> "JobFeed":
        self._queue = await self._hub.listen(self._channel)
        return self

    async def __aexit__(self, *exc_info):
        if self._queue is not None:
            await self._hub.leave(self._channel, self._queue)
            self._queue = None

    async def events(self) -> AsyncIterator[Event | None]:
        """Through a Redis restart too: the hub listens again, and the log fills the gap."""
        failures = 0
        while True:
            try:
                async for event in self._events():
                    failures = 0
                    yield event
                return
            except RedisError:
                if failures == len(RETRY_DELAYS):
                    raise
                await anyio.sleep(RETRY_DELAYS[failures])
                failures += 1

    async def _events(self) -> AsyncIterator[Event | None]:
        async for event in self._from_log():
            yield event
        while not self.ended:
            try:
                raw = await asyncio.wait_for(self._queue.get(), self._idle_after)
            except asyncio.TimeoutError:
                raw = None
            if raw is None or raw is RESYNC:
                # Quiet, or the connection dropped: read the log in case something was missed.
                caught_up = False
                async for event in self._from_log():
                    caught_up = True
                    yield event
                if raw is None and not caught_up:
                    yield None
                continue
            event = Event.from_json(raw)
            if event.seq <= self.last_seq:
                continue
            if event.seq > self.last_seq + 1:
                async for missed in self._from_log():
                    yield missed
                continue
            yield self._advance(event)

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
        """Listeners to the job's live channel besides this feed (call after closing it)."""
        local = self._hub.listening(self._channel)
        if local:
            return local
        counts = await self._redis.pubsub_numsub(self._channel)  # other API processes
        return int(counts[0][1]) if counts else 0

    async def oldest_retained(self) -> int | None:
        """Sequence number of the first event still in the log, if any."""
        first = await self._redis.xrange(events_key(self.job_id), count=1)
        return Event.from_json(first[0][1][b"e"]).seq if first else None
