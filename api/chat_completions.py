"""POST /v1/chat/completions: OpenAI chat completions on the same jobs as /v1/messages."""

from sse_starlette import ServerSentEvent
from starlette.requests import Request
from starlette.responses import JSONResponse

from api import openai_sse
from api.anthropic_request import decode_json_body
from api.messages import collect
from api.openai_request import parse_chat_request
from api.relay import finish, job_events, read_body, start_job
from api.shutdown import event_source


async def create_chat_completion(request: Request):
    state = request.app.state
    body = decode_json_body(await read_body(request, state.settings.max_body_bytes))
    job_request, stream, include_usage = parse_chat_request(body, state.router)
    feed = await start_job(request, job_request)
    if stream:
        formatter = openai_sse.ChunkFormatter(feed.job_id, job_request.requested_model, include_usage)
        return event_source(state.settings, stream_chunks(state.jobs, feed, formatter))
    blocks, end = await collect(request, state.jobs, feed)
    if end is None:
        return JSONResponse({}, status_code=499)
    return JSONResponse(openai_sse.completion(feed.job_id, job_request.requested_model, blocks, end))


async def stream_chunks(jobs, feed, formatter: openai_sse.ChunkFormatter):
    try:
        yield formatter.first()
        async for event in job_events(jobs, feed):
            if event is None:
                yield ServerSentEvent(comment="ping")  # keeps proxies and clients from timing out
                continue
            for frame in formatter.frames(event):
                yield frame
    finally:
        await finish(jobs, feed)
