"""From a job request to its events, for any wire format.

Opens the job's feed before enqueueing it (so no event is missed), yields its
events with None on quiet ticks, turns a job that can no longer end by
itself into an error event, and cancels the job if the consumer goes away.
"""

import hashlib
import json
import logging

import anyio
from redis.exceptions import RedisError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from api.auth import principal_of
from api.errors import RequestTooLarge
from api.feed import JobFeed
from api.job_queue import JobQueue
from api.shutdown import shutting_down
from hearth.contract import ERROR, Event, GenerationRequest, dedupe_key

log = logging.getLogger(__name__)


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise RequestTooLarge(f"request body is over the {limit}-byte limit")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestTooLarge(f"request body is over the {limit}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


def fingerprint(request: Request, job_request: GenerationRequest) -> str:
    """Same normalized body (billing nonce already dropped) and same API key: the same request."""
    key = request.headers.get("x-api-key") or request.headers.get("authorization") or ""
    body = json.dumps(job_request.to_dict(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(f"{key}\n{body}".encode()).hexdigest()


async def start_job(request: Request, job_request: GenerationRequest, priority: str = "interactive") -> JobFeed:
    """Subscribe to a new job's feed, then enqueue the job. The caller closes the feed.

    A request identical to one still queued or running (a client re-sending
    after its own timeout) attaches to that job and replays its events instead.
    """
    state = request.app.state
    job_id = state.jobs.new_job_id()
    existing = await run_in_threadpool(state.jobs.claim, dedupe_key(fingerprint(request, job_request)), job_id)
    if existing:
        log.info("job %s: identical request attached", existing)
        feed = JobFeed(state.redis, state.hub, existing, idle_after=state.settings.ping_interval)
        return await feed.__aenter__()
    feed = JobFeed(state.redis, state.hub, job_id, idle_after=state.settings.ping_interval)
    await feed.__aenter__()
    description = f"messages model={job_request.requested_model} max_tokens={job_request.max_tokens}"
    try:
        await run_in_threadpool(state.jobs.enqueue, feed.job_id, job_request.to_dict(), priority, description,
                                owner=principal_of(request.scope))
    except BaseException:
        await feed.__aexit__(None, None, None)
        raise
    log.info("job %s: %s %s queued (%s)", feed.job_id, request.method, request.url.path, description)
    return feed


async def job_problem(jobs: JobQueue, feed: JobFeed) -> dict | None:
    """On a quiet feed: an error for the client if the job can no longer end by itself."""
    state = await run_in_threadpool(jobs.state, feed.job_id)
    if state.status is None:
        return {"type": "api_error", "message": f"job {feed.job_id} expired before it ended"}
    if state.status in ("failed", "stopped", "canceled"):
        return {"type": "api_error", "message": f"job {feed.job_id} ended ({state.status}) without a final event"}
    if not state.worker_alive:
        return {"type": "api_error", "message": f"the worker running job {feed.job_id} stopped responding"}
    return None


async def job_events(jobs: JobQueue, feed: JobFeed):
    """The job's events in order, None on quiet ticks; always ends with a terminal event.

    When the API shuts down, the stream ends with an error event carrying the
    last event's id, so a client resuming from it misses nothing.
    """
    try:
        async for event in feed.events():
            if event is None:
                try:
                    problem = await job_problem(jobs, feed)
                except RedisError:
                    problem = None  # Redis is restarting: the feed waits for it, or gives up
                if problem:
                    log.warning("job %s: %s", feed.job_id, problem["message"])
                    yield Event(feed.last_seq + 1, ERROR, {"error": problem})
                    return
            yield event
            if shutting_down() and not feed.ended:
                yield Event(feed.last_seq, ERROR, {"error": {
                    "type": "overloaded_error", "message": "Hearth's API is shutting down; retry shortly"}})
                return
    except RedisError as exc:
        # Once the stream has started, an outage is reported in it, never as a broken connection.
        yield Event(feed.last_seq + 1, ERROR, {"error": {"type": "api_error", "message": f"lost Redis: {exc}"}})


async def finish(jobs: JobQueue, feed: JobFeed):
    """Always runs when a consumer stops: close the feed; cancel the job if it has not ended
    and nobody else (an attached duplicate, a /v1/jobs watcher) is listening to it."""
    # Shielded: this runs while the consumer's task is being cancelled.
    with anyio.CancelScope(shield=True):
        await feed.__aexit__(None, None, None)
        if feed.ended:
            return
        try:
            if not await feed.other_listeners():
                log.info("job %s: client went away, cancelling", feed.job_id)
                await run_in_threadpool(jobs.cancel_quietly, feed.job_id)
        except RedisError as exc:
            log.warning("job %s: could not cancel after its client left (Redis: %s)", feed.job_id, exc)
