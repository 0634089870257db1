"""The Falcon side of the API (jobs and batches), mounted inside the Starlette app.

Errors leave in the same Anthropic shape as Starlette's (errors.py).
"""

import logging

import falcon
import falcon.asgi
from redis.exceptions import RedisError

from api.batches_api import add_batch_routes
from api.errors import HearthError, error_body
from api.jobs_api import add_job_routes

log = logging.getLogger(__name__)

FALCON_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
                      405: "invalid_request_error", 413: "request_too_large"}


async def _hearth_error(req, resp, exc: HearthError, params):
    resp.status = exc.status
    resp.media = error_body(exc.error_type, exc.message)


async def _redis_error(req, resp, exc: RedisError, params):
    log.warning("Redis unavailable for %s %s: %s", req.method, req.path, exc)
    resp.status = 503
    resp.media = error_body("api_error", f"the job queue is unavailable (Redis: {exc}); retry shortly")


def _serialize_http_error(req, resp, exc: falcon.HTTPError):
    status = exc.status_code
    resp.status = status
    message = exc.description or exc.title
    resp.media = error_body(FALCON_ERROR_TYPES.get(status, "api_error"), message)


def create_falcon_app(state) -> falcon.asgi.App:
    """`state` is the Starlette app's state: its Redis clients and queue appear at start-up."""
    app = falcon.asgi.App()
    app.req_options.strip_url_path_trailing_slash = True
    add_job_routes(app, state)
    add_batch_routes(app, state)
    app.add_error_handler(HearthError, _hearth_error)
    app.add_error_handler(RedisError, _redis_error)
    app.set_error_serializer(_serialize_http_error)
    return app
