"""Publish a job's events: log (Redis Stream) and live (pub/sub), one round trip each.

The same pipeline also reads the job's cancel flag and, for a background job,
the length of the interactive queue, so checking for a cancel or for waiting
interactive work between tokens costs no extra round trip.
"""

import logging
import time

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from hearth.contract import Event, cancel_key, progress_key
from hearth.event_log import append_error, check_added, queue_event

log = logging.getLogger(__name__)

# Backoff between attempts while Redis is unreachable (about 15 s in all), then the job fails.
RETRY_DELAYS = (0.1, 0.2, 0.5, 1.0, 2.0, 3.0, 4.0, 4.0)


class EventPublisher:
    """`watch_queue`: a Redis list (an rq queue's key) whose length each round trip also reads."""

    def __init__(self, redis, job_id: str, ttl: int, seq: int = 0, watch_queue: str | None = None):
        self._redis = redis
        self._job_id = job_id
        self._ttl = ttl
        self._watch_queue = watch_queue
        self.seq = seq
        self.cancel_requested = False
        # Jobs waiting in `watch_queue` at the last round trip.
        self.waiting = 0
        # Output tokens so far: stored with each event, for GET /v1/jobs/{id}.
        self.output_tokens = 0

    def publish(self, event_type: str, data: dict) -> Event:
        event = Event(self.seq + 1, event_type, data)
        added, _, _, _, *flags = self._send(event)
        check_added(added)
        # Counted once sent: a publish cut short (a signal mid-send) leaves no gap behind it.
        self.seq = event.seq
        self._read_flags(flags)
        return event

    def _read_flags(self, flags: list):
        cancelled, *waiting = flags
        self.cancel_requested = self.cancel_requested or bool(cancelled)
        self.waiting = int(waiting[0]) if waiting else 0

    def _flags(self, pipe):
        pipe.exists(cancel_key(self._job_id))
        if self._watch_queue:
            pipe.llen(self._watch_queue)

    def _send(self, event: Event) -> list:
        """One round trip; retried through a Redis restart (the log's explicit ids make it idempotent)."""
        for delay in (*RETRY_DELAYS, None):
            try:
                pipe = self._redis.pipeline(transaction=False)
                queue_event(pipe, self._job_id, event, self._ttl)
                pipe.set(progress_key(self._job_id), self.output_tokens, ex=self._ttl)
                self._flags(pipe)
                return pipe.execute(raise_on_error=False)
            except (RedisConnectionError, RedisTimeoutError):
                if delay is None:
                    raise
                log.warning("job %s: Redis unreachable, retrying event %d in %.1fs", self._job_id, event.seq, delay)
                time.sleep(delay)

    def refresh(self):
        """Read the flags on their own (before work starts, during prefill, after quiet steps)."""
        pipe = self._redis.pipeline(transaction=False)
        self._flags(pipe)
        self._read_flags(pipe.execute())

    def publish_error(self, error_type: str, message: str):
        """A failing job's terminal event: after whatever the log holds last, best effort, never raising.

        An interrupted publish may or may not have reached the log; appending
        after the log's own last entry is right either way.
        """
        try:
            self.seq = append_error(self._redis, self._job_id, error_type, message, self._ttl).seq
        except Exception:  # noqa: BLE001 - the job's own error is what matters
            log.warning("job %s: could not publish its terminal event", self._job_id, exc_info=True)
