"""One Redis pub/sub connection for every stream an API process serves.

A subscription per stream would open a Redis connection per stream (64
streams, 64 connections) and pay for setting one up in every request's time
to first token. The hub subscribes to each job's channel once, on one
connection, and puts each message in the queue of every local listener.

Pub/sub is at most once: when the connection drops, the hub connects and
subscribes again, and puts RESYNC in every queue, so each listener reads
what it missed from the job's log (api/feed.py).
"""

import asyncio
import contextlib
import logging

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

# In a listener's queue: the connection was lost; read the log for what was missed.
RESYNC = object()
RECONNECT_DELAYS = (0.1, 0.25, 0.5, 1.0, 2.0)
# A subscription Redis has not confirmed in this long is treated as a lost connection.
CONFIRM_TIMEOUT = 5.0
# Messages a listener may leave unread (a client that stopped reading); past it, it reads the log instead.
QUEUE_LIMIT = 10_000


class LiveHub:
    def __init__(self, redis: Redis):
        self._redis = redis
        self._pubsub = redis.pubsub()
        self._listeners: dict[bytes, set[asyncio.Queue]] = {}
        self._confirmations: dict[bytes, asyncio.Future] = {}
        self._reader: asyncio.Task | None = None
        self._subscribed = asyncio.Event()  # the reader waits for a first channel

    async def listen(self, channel: str) -> asyncio.Queue:
        """A queue of the channel's messages (raw bytes, or RESYNC), live once this returns."""
        key = channel.encode()
        queue = asyncio.Queue(QUEUE_LIMIT)
        listeners = self._listeners.setdefault(key, set())
        listeners.add(queue)
        try:
            if len(listeners) == 1:
                await self._subscribe(key)
            elif key in self._confirmations:
                await asyncio.shield(self._confirmations[key])
        except BaseException:
            await self.leave(channel, queue)
            raise
        return queue

    async def leave(self, channel: str, queue: asyncio.Queue):
        key = channel.encode()
        listeners = self._listeners.get(key, set())
        listeners.discard(queue)
        if listeners:
            return
        self._listeners.pop(key, None)
        with contextlib.suppress(RedisError):
            await self._pubsub.unsubscribe(key)

    def listening(self, channel: str) -> int:
        """Local listeners to the channel."""
        return len(self._listeners.get(channel.encode(), ()))

    async def close(self):
        if self._reader is not None:
            self._reader.cancel()
            # Bounded: a connection that swallows the cancel must not hold up a shutdown.
            await asyncio.wait({self._reader}, timeout=1.0)
        with contextlib.suppress(RedisError):
            await self._pubsub.aclose()

    async def _subscribe(self, key: bytes):
        confirmed = asyncio.get_running_loop().create_future()
        self._confirmations[key] = confirmed
        try:
            await self._pubsub.subscribe(key)
            self._subscribed.set()
            if self._reader is None or self._reader.done():
                self._reader = asyncio.create_task(self._read(), name="hearth-live-hub")
            await asyncio.wait_for(asyncio.shield(confirmed), CONFIRM_TIMEOUT)
        except asyncio.TimeoutError:
            raise RedisConnectionError(f"Redis did not confirm the subscription to {key.decode()}") from None
        finally:
            if self._confirmations.get(key) is confirmed:
                del self._confirmations[key]

    async def _read(self):
        while True:
            await self._subscribed.wait()
            try:
                message = await self._pubsub.get_message(timeout=1.0)
            except RedisError as exc:
                log.warning("live hub: Redis connection lost (%s); subscribing again", exc)
                await self._reconnect()
                continue
            if message is None:
                if not self._pubsub.subscribed:
                    self._subscribed.clear()
                continue
            kind, channel = message["type"], message["channel"]
            if kind == "message":
                for queue in self._listeners.get(channel, ()):
                    _put(queue, message["data"])
            elif kind == "subscribe" and channel in self._confirmations and not self._confirmations[channel].done():
                self._confirmations[channel].set_result(None)

    async def _reconnect(self):
        """A new connection subscribed to every channel listened to; listeners read their logs."""
        for delay in (*RECONNECT_DELAYS, *[RECONNECT_DELAYS[-1]] * 1000):
            await asyncio.sleep(delay)
            try:
                with contextlib.suppress(RedisError):
                    await self._pubsub.aclose()
                self._pubsub = self._redis.pubsub()
                if self._listeners:
                    await self._pubsub.subscribe(*self._listeners)
                break
            except RedisError:
                continue
        for listeners in self._listeners.values():
            for queue in listeners:
                _put(queue, RESYNC)


def _put(queue: asyncio.Queue, item):
    """A listener that has fallen this far behind drops what it holds and reads the log instead."""
    try:
        queue.put_nowait(item)
    except asyncio.QueueFull:
        while not queue.empty():
            queue.get_nowait()
        queue.put_nowait(RESYNC)
