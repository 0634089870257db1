"""Publish jobs' events: log (Redis Stream) and live (pub/sub), every running job in one round trip.

A job stages its events as it makes them; the scheduler flushes every job's
staged events together. The same pipeline reads each job's cancel flag and
the queues' lengths, so checking for a cancel or for waiting work between
tokens costs no extra round trip, however many jobs decode at once.

Deltas staged between two flushes that continue the same block are merged
into one event: when tokens come faster than COALESCE_SECONDS, the log, the
channel, the API and the client each handle one event for several tokens.
"""

import logging
import time

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from hearth.contract import DELTA, Event, cancel_key, partial_key, progress_key
from hearth.event_log import append_error, check_added, queue_events

log = logging.getLogger(__name__)

# Backoff between attempts while Redis is unreachable (about 15 s in all), then the jobs fail.
RETRY_DELAYS = (0.1, 0.2, 0.5, 1.0, 2.0, 3.0, 4.0, 4.0)
# A token's own writes are its event (log and channel); the rest is refreshed this often, in seconds.
TTL_REFRESH_SECONDS = 60.0
PROGRESS_SECONDS = 0.25
# Deltas are sent at least this often (seconds); anything else (a block starting or ending) at once.
COALESCE_SECONDS = 0.01
MERGEABLE = {"text_delta": "text", "thinking_delta": "thinking", "input_json_delta": "partial_json"}
PARTIALS = {"text_delta": "text", "thinking_delta": "thinking"}  # what a poll shows of a running job


class EventPublisher:
    """One job's events: sequence numbers, what is staged, and its flags as last read."""

    def __init__(self, redis, job_id: str, ttl: int, seq: int = 0):
        self._redis = redis
        self.job_id = job_id
        self._ttl = ttl
        self.seq = seq
        self.pending: list[Event] = []
        self.cancel_requested = False
        # Output tokens so far: stored every PROGRESS_SECONDS, for GET /v1/jobs/{id}.
        self.output_tokens = 0
        # Bytes of text and thinking written so far: a retried write lands at the same offset.
        self._partial_bytes = {kind: redis.strlen(partial_key(job_id, kind)) if seq else 0
                               for kind in PARTIALS.values()}
        self._grown: dict[str, int] = {}
        self._ttl_set_at = self._progress_at = float("-inf")

    def stage(self, event_type: str, data: dict) -> Event:
        """The job's next event, sent with the next flush (merged into the last staged delta it continues)."""
        last = self.pending[-1] if self.pending else None
        if (event_type == DELTA and last is not None and last.type == DELTA and last.data["index"] == data["index"]
                and last.data["delta"]["type"] == data["delta"]["type"] in MERGEABLE):
            field = MERGEABLE[data["delta"]["type"]]
            merged = dict(last.data["delta"], **{field: last.data["delta"][field] + data["delta"][field]})
            self.pending[-1] = Event(last.seq, DELTA, dict(last.data, delta=merged))
            return Event(last.seq, event_type, data)
        event = Event(self.seq + 1, event_type, data)
        self.seq = event.seq
        self.pending.append(event)
        return event

    @property
    def urgent(self) -> bool:
        """Something staged besides deltas (a block starts or ends, the job ends): send it now."""
        return any(event.type != DELTA for event in self.pending)

    def publish(self, event_type: str, data: dict) -> Event:
        """Stage one event and flush it at once (a job on its own)."""
        event = self.stage(event_type, data)
        flush(self._redis, [self])
        return event

    def refresh(self):
        """Read the cancel flag on its own (before work starts)."""
        self.cancel_requested = self.cancel_requested or bool(self._redis.exists(cancel_key(self.job_id)))

    def publish_error(self, error_type: str, message: str):
        """A failing job's terminal event: after whatever the log holds last, best effort, never raising.

        Staged events are dropped; an interrupted flush may or may not have
        reached the log, and appending after the log's own last entry is right
        either way.
        """
        self.pending = []
        try:
            self.seq = append_error(self._redis, self.job_id, error_type, message, self._ttl).seq
        except Exception:  # the job's own error is what matters
            log.warning("job %s: could not publish its terminal event", self.job_id, exc_info=True)

    def _queue(self, pipe, read_flag: bool) -> int:
        """Add this job's writes (and its flag read) to `pipe`; returns how many replies they make."""
        replies = 0
        if self.pending:
            now = time.monotonic()
            ending = self.pending[-1].is_terminal
            replies += queue_events(pipe, self.job_id, self.pending, self._ttl,
                                    expire=ending or now - self._ttl_set_at > TTL_REFRESH_SECONDS)
            replies += self._queue_partials(pipe)
            if ending or now - self._progress_at > PROGRESS_SECONDS:
                pipe.set(progress_key(self.job_id), self.output_tokens, ex=self._ttl)
                replies += 1
                self._progress_at = now
            if ending or now - self._ttl_set_at > TTL_REFRESH_SECONDS:
                for kind in PARTIALS.values():
                    pipe.expire(partial_key(self.job_id, kind), self._ttl)
                replies += len(PARTIALS)
                self._ttl_set_at = now
        if read_flag:
            pipe.exists(cancel_key(self.job_id))
            replies += 1
        return replies

    def _queue_partials(self, pipe) -> int:
        """The text and thinking so far, grown in place, so that a poll reads them without the log."""
        grown = {}
        for event in self.pending:
            kind = PARTIALS.get(event.data.get("delta", {}).get("type")) if event.type == DELTA else None
            if kind:
                grown[kind] = grown.get(kind, b"") + event.data["delta"][kind].encode()
        for kind, data in grown.items():
            # SETRANGE at a known offset, not APPEND: a flush retried after a lost reply writes the same bytes.
            pipe.setrange(partial_key(self.job_id, kind), self._partial_bytes[kind], data)
            if self._partial_bytes[kind] == 0:  # the key is made now: it gets the job's TTL (then refreshed with it)
                pipe.expire(partial_key(self.job_id, kind), self._ttl)
        self._grown = {kind: len(data) for kind, data in grown.items()}
        return len(grown) + sum(self._partial_bytes[kind] == 0 for kind in grown)

    def _read(self, replies: list, read_flag: bool):
        for added in replies[:len(self.pending)]:
            check_added(added)
        self.pending = []
        for kind, size in self._grown.items():
            self._partial_bytes[kind] += size
        self._grown = {}
        if read_flag:
            self.cancel_requested = self.cancel_requested or bool(replies[-1])


def flush(redis, publishers: list, watch_queues: tuple = (), read_flags: bool = True, tally=None) -> list[int]:
    """Every publisher's staged events and, with `read_flags`, its cancel flag, the lengths of
    `watch_queues` and the worker's metrics `tally`: one round trip.

    Retried through a Redis restart (the log's explicit ids make it idempotent).
    """
    watch_queues = watch_queues if read_flags else ()
    for delay in (*RETRY_DELAYS, None):
        try:
            pipe = redis.pipeline(transaction=False)
            spans = [publisher._queue(pipe, read_flags) for publisher in publishers]
            for queue in watch_queues:
                pipe.llen(queue)
            counted = bool(tally)
            if counted:
                tally.queue(pipe)  # its replies come after the queues' lengths and are not read
            replies = pipe.execute(raise_on_error=False) if sum(spans) or watch_queues or counted else []
            if counted:
                tally.clear()
            break
        except (RedisConnectionError, RedisTimeoutError):
            if delay is None:
                raise
            log.warning("Redis unreachable, retrying %d jobs' events in %.1fs", len(publishers), delay)
            time.sleep(delay)
    start = 0
    for publisher, span in zip(publishers, spans):
        publisher._read(replies[start:start + span], read_flags)
        start += span
    return [int(length) for length in replies[start:start + len(watch_queues)]]
