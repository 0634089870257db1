"""POST /v1/messages/count_tokens: counted by the worker, with the model's own tokenizer.

The count runs the same rendering path as generation (system, messages,
tools, chat template), so it equals the prompt a generation would process.
"""

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

from api.anthropic_request import decode_json_body, parse_messages_request
from api.auth import principal_of
from api.relay import read_body
from hearth.contract import COUNT_TOKENS_JOB, QUEUE_INTERACTIVE


async def count_tokens(request: Request):
    state = request.app.state
    body = decode_json_body(await read_body(request, state.settings.max_body_bytes))
    if isinstance(body, dict):
        # count_tokens takes a Messages request without max_tokens.
        body = dict(body, max_tokens=body.get("max_tokens") or 1, stream=False)
    job_request, _ = parse_messages_request(body, state.router)
    jobs = state.jobs
    job_id = jobs.new_job_id()
    await run_in_threadpool(jobs.enqueue, job_id, job_request.to_dict(), QUEUE_INTERACTIVE,
                            f"count_tokens model={job_request.requested_model}", COUNT_TOKENS_JOB,
                            owner=principal_of(request.scope))
    result = await run_in_threadpool(jobs.wait_for_result, job_id, state.settings.request_timeout)
    return JSONResponse({"input_tokens": result["input_tokens"]})
