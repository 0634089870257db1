"""Writing to a job's event log: the worker's events, and a last event written from outside its run.

Events go to the log (a Redis Stream, under their sequence numbers) and to
the live channel in one pipeline. Explicit stream ids make a write
idempotent: a retry after a lost reply, or a worker and the API writing the
same last event, leaves one entry.

The API (a suspended job cancelled while it waits) and the reaper (a job
whose worker died) write a job's last event when the job never will.
"""

from redis.exceptions import ResponseError

from hearth.contract import ERROR, Event, error_data, events_key, live_channel, seq_of, stream_id


def queue_events(pipe, job_id: str, events: list, ttl: int, expire: bool = True) -> int:
    """Add the writes of `events` to a pipeline; returns how many replies they make.

    The first `len(events)` replies are the log's: check each with `check_added`.
    `expire` (re)sets the log's TTL; a running job needs it only now and then.
    """
    raws = [event.to_json() for event in events]
    for event, raw in zip(events, raws):
        pipe.xadd(events_key(job_id), {"e": raw}, id=stream_id(event.seq))
    for raw in raws:
        pipe.publish(live_channel(job_id), raw)
    if expire:
        pipe.expire(events_key(job_id), ttl)
    return 2 * len(events) + expire


def check_added(reply):
    # "equal or smaller": that sequence number is already in the log (an earlier attempt, or the other writer).
    if isinstance(reply, ResponseError) and "equal or smaller" not in str(reply):
        raise reply


def append_error(connection, job_id: str, error_type: str, message: str, ttl: int) -> Event:
    """Append an `error` event after the last one in the job's log, and publish it live."""
    last = connection.xrevrange(events_key(job_id), count=1)
    event = Event(seq_of(last[0][0]) + 1 if last else 1, ERROR, error_data(error_type, message))
    pipe = connection.pipeline(transaction=False)
    queue_events(pipe, job_id, [event], ttl)
    added, *_ = pipe.execute(raise_on_error=False)
    check_added(added)
    return event
