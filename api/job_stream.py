"""GET /v1/jobs/{id}/events: a job's events as Anthropic SSE, from the start or from where a client left off.

Replayed from the job's event log, then live, ending with a terminal event.
`Last-Event-ID` (or `?after=N`) resumes after event N with no gap and no
duplicate. Watching is passive: a watcher that goes away does not cancel
the job (that is what DELETE /v1/jobs/{id} is for).
"""

import anyio
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from api import anthropic_sse
from api.auth import principal_of
from api.errors import InvalidRequest
from api.feed import JobFeed
from api.job_views import requested_model
from api.messages import anthropic_frames
from api.shutdown import event_source


def resume_point(request: Request) -> int:
    raw = request.headers.get("last-event-id") or request.query_params.get("after") or "0"
    if not raw.isdigit():
        raise InvalidRequest(f"Last-Event-ID / after: expected an event number, got {raw!r}")
    return int(raw)


async def job_event_stream(request: Request):
    state = request.app.state
    job_id = request.path_params["job_id"]
    after = resume_point(request)
    job = await run_in_threadpool(state.jobs.fetch, job_id, principal_of(request.scope))
    feed = JobFeed(state.redis, state.hub, job_id, after_seq=after, idle_after=state.settings.ping_interval)
    await feed.__aenter__()
    return event_source(state.settings, replay(state.jobs, feed, requested_model(job), after))


async def replay(jobs, feed: JobFeed, model: str, after: int):
    try:
        oldest = await feed.oldest_retained()
        state = await run_in_threadpool(jobs.state, feed.job_id)
        if (oldest is not None and oldest > after + 1) or (oldest is None and state.status not in (
                "queued", "deferred", "scheduled", "started")):
            yield anthropic_sse.error_frame({"type": "invalid_request_error",
                                             "message": f"events after {after} of job {feed.job_id} are no longer retained"})
            return
        # From the start: message_start first, with the usage of the job's `started` event.
        async for frame in anthropic_frames(jobs, feed, model if after == 0 else None):
            yield frame
    finally:
        with anyio.CancelScope(shield=True):
            await feed.__aexit__(None, None, None)
