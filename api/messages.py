"""POST /v1/messages: Anthropic Messages, streaming or not.

Streaming sends `message_start` once the prompt is prefilled, carrying its
real usage as Anthropic's does; if that takes longer than one ping interval
(a long queue or prefill), `message_start` goes out then with zero usage
(the final `message_delta` has the real figures) and pings follow. Then the
job's events in Anthropic's order; it ends with `message_stop` or an `error`
event. A client that goes away cancels its job.
"""

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse

from api import anthropic_sse
from api.anthropic_request import decode_json_body, parse_messages_request
from api.disconnect import unless_disconnected
from api.errors import JobFailed, RequestTimedOut
from api.relay import finish, job_events, read_body, start_job
from api.shutdown import event_source
from hearth.contract import ERROR, MESSAGE_END, STARTED
from hearth.message import MessageAssembler


async def create_message(request: Request):
    state = request.app.state
    body = decode_json_body(await read_body(request, state.settings.max_body_bytes))
    job_request, stream = parse_messages_request(body, state.router)
    feed = await start_job(request, job_request)
    if stream:
        return event_source(state.settings, stream_message(state.jobs, feed, job_request.requested_model))
    return await wait_for_message(request, state.jobs, feed, job_request.requested_model)


async def anthropic_frames(jobs, feed, model: str | None = None):
    """A job's events as Anthropic SSE frames, with a ping on every quiet tick.

    With `model`, the stream opens with `message_start`: when the job's `started` event
    comes (its usage known), or at the first quiet tick or other event, whichever is first.
    """
    opening = model is not None
    async for event in job_events(jobs, feed):
        if opening:
            opening = False
            started = event is not None and event.type == STARTED
            yield anthropic_sse.message_start(feed.job_id, model, event.data if started else None)
            if started:
                continue
        if event is None:
            yield anthropic_sse.ping()
            continue
        for frame in anthropic_sse.frames(event):
            yield frame


async def stream_message(jobs, feed, model: str):
    try:
        async for frame in anthropic_frames(jobs, feed, model):
            yield frame
    finally:
        await finish(jobs, feed)


async def collect(request: Request, jobs, feed):
    """Wait for a job's end: (assembled blocks, message_end data), or (None, None) if the client
    went away. Raises JobFailed on an error event.

    Past HEARTH_REQUEST_TIMEOUT the job is cancelled: long work belongs in a stream or /v1/jobs.
    """
    timeout = request.app.state.settings.request_timeout
    try:
        with anyio.move_on_after(timeout):
            outcome = await unless_disconnected(request.receive, lambda: assemble(jobs, feed))
            return outcome or (None, None)
        raise RequestTimedOut(f"no answer within {timeout:.0f}s; the job was cancelled. "
                              "Stream the response (\"stream\": true) or submit it to /v1/jobs")
    finally:
        await finish(jobs, feed)


async def assemble(jobs, feed):
    """The job's blocks and its message_end data, once it has ended. Raises JobFailed on an error."""
    assembler = MessageAssembler()
    async for event in job_events(jobs, feed):
        if event is None:
            continue
        assembler.apply(event)
        if event.type == ERROR:
            raise JobFailed(event.data["error"])
        if event.type == MESSAGE_END:
            return assembler.blocks, event.data


async def wait_for_message(request: Request, jobs, feed, model: str):
    blocks, end = await collect(request, jobs, feed)
    if end is None:
        return JSONResponse({}, status_code=499)  # nobody is listening
    return JSONResponse(anthropic_sse.final_message(feed.job_id, model, blocks, end))
