"""Writing a job's last event from outside its run: the job will never write it itself.

The API (a suspended job cancelled while it waits) and the reaper (a job whose
worker died) use this. Explicit stream ids make it safe against a worker
that writes the same sequence number after all: the log keeps one.
"""

from redis.exceptions import ResponseError

from hearth.contract import ERROR, Event, error_data, events_key, live_channel, seq_of, stream_id


def append_error(connection, job_id: str, error_type: str, message: str, ttl: int) -> Event:
    """Append an `error` event after the last one in the job's log, and publish it live."""
    last = connection.xrevrange(events_key(job_id), count=1)
    event = Event(seq_of(last[0][0]) + 1 if last else 1, ERROR, error_data(error_type, message))
    raw = event.to_json()
    pipe = connection.pipeline(transaction=False)
    pipe.xadd(events_key(job_id), {"e": raw}, id=stream_id(event.seq))
    pipe.expire(events_key(job_id), ttl)
    pipe.publish(live_channel(job_id), raw)
    added, *_ = pipe.execute(raise_on_error=False)
    if isinstance(added, ResponseError) and "equal or smaller" not in str(added):
        raise added
    return event
