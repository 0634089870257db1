"""Background-agent jobs: Falcon resources under /v1/jobs.

    POST   /v1/jobs                 submit {"request": <Messages request>, "priority", "metadata", "result_ttl"}
    GET    /v1/jobs                 recent jobs (?status=, ?limit=, ?after_id=)
    GET    /v1/jobs/{id}            status, queue position, progress, final message or error
    DELETE /v1/jobs/{id}            cancel (also POST /v1/jobs/{id}/cancel)

A job's SSE stream, GET /v1/jobs/{id}/events, is served by Starlette (job_stream.py).
"""

import falcon
from starlette.concurrency import run_in_threadpool

from api.anthropic_request import decode_json_body, parse_messages_request, require
from api.auth import principal_of
from api.errors import RequestTooLarge
from api.job_views import STATUSES, job_view
from hearth.contract import PRIORITIES, QUEUE_BACKGROUND

MAX_PAGE = 100


async def read_json(req: falcon.asgi.Request, limit: int):
    if req.content_length and req.content_length > limit:
        raise RequestTooLarge(f"request body is over the {limit}-byte limit")
    raw = await req.stream.read(limit + 1)
    if len(raw) > limit:
        raise RequestTooLarge(f"request body is over the {limit}-byte limit")
    return decode_json_body(raw)


def base_url(req: falcon.asgi.Request) -> str:
    return f"{req.scheme}://{req.netloc}"


class JobsResource:
    def __init__(self, state):
        self.state = state

    async def on_post(self, req, resp):
        body = await read_json(req, self.state.settings.max_body_bytes)
        require(isinstance(body, dict) and isinstance(body.get("request"), dict),
                 "request: expected a Messages API request object")
        priority = body.get("priority", QUEUE_BACKGROUND)
        require(priority in PRIORITIES, f"priority: expected one of {', '.join(PRIORITIES)}")
        metadata = body.get("metadata", {})
        require(isinstance(metadata, dict), "metadata: expected an object")
        result_ttl = body.get("result_ttl")
        require(result_ttl is None or (isinstance(result_ttl, int) and not isinstance(result_ttl, bool)
                                        and result_ttl > 0), "result_ttl: expected a positive number of seconds")
        job_request, _ = parse_messages_request(dict(body["request"], stream=False), self.state.router)
        jobs = self.state.jobs
        job_id = jobs.new_job_id()
        await run_in_threadpool(jobs.enqueue, job_id, job_request.to_dict(), priority,
                                f"job model={job_request.requested_model}", meta={"metadata": metadata},
                                result_ttl=result_ttl, owner=principal_of(req.scope))
        resp.status = falcon.HTTP_202
        resp.media = {"id": job_id, "type": "job", "status": "queued",
                      "status_url": f"{base_url(req)}/v1/jobs/{job_id}",
                      "events_url": f"{base_url(req)}/v1/jobs/{job_id}/events"}

    async def on_get(self, req, resp):
        status = req.get_param("status")
        require(status is None or status in STATUSES, f"status: expected one of {', '.join(STATUSES)}")
        limit = req.get_param_as_int("limit", min_value=1, max_value=MAX_PAGE, default=20)
        jobs, has_more = await run_in_threadpool(self.state.jobs.recent, status, limit, req.get_param("after_id"),
                                                 principal_of(req.scope))
        views = [await run_in_threadpool(job_view, self.state.jobs.connection, job, base_url(req)) for job in jobs]
        resp.media = {"data": views, "has_more": has_more,
                      "first_id": views[0]["id"] if views else None, "last_id": views[-1]["id"] if views else None}


class JobResource:
    def __init__(self, state):
        self.state = state

    async def on_get(self, req, resp, job_id):
        job = await run_in_threadpool(self.state.jobs.fetch, job_id, principal_of(req.scope))
        resp.media = await run_in_threadpool(job_view, self.state.jobs.connection, job, base_url(req))

    async def on_delete(self, req, resp, job_id):
        await run_in_threadpool(self.state.jobs.cancel, job_id, principal_of(req.scope))
        await self.on_get(req, resp, job_id)


class JobCancelResource(JobResource):
    async def on_post(self, req, resp, job_id):
        await self.on_delete(req, resp, job_id)


def add_job_routes(app: falcon.asgi.App, state):
    app.add_route("/v1/jobs", JobsResource(state))
    app.add_route("/v1/jobs/{job_id}", JobResource(state))
    app.add_route("/v1/jobs/{job_id}/cancel", JobCancelResource(state))
