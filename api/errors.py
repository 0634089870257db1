"""A few domain exceptions, each mapped once to an HTTP status and Anthropic's error JSON.

Once a stream has started, errors travel as `error` events instead (see
`anthropic_sse.py`); these handlers only ever run before the first byte.
"""

import logging

from redis.exceptions import RedisError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

log = logging.getLogger(__name__)


class HearthError(Exception):
    status = 500
    error_type = "api_error"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InvalidRequest(HearthError):
    status = 400
    error_type = "invalid_request_error"


class RequestTooLarge(HearthError):
    status = 413
    error_type = "request_too_large"


class NotFound(HearthError):
    status = 404
    error_type = "not_found_error"


class Conflict(HearthError):
    status = 409
    error_type = "invalid_request_error"


class QueueUnavailable(HearthError):
    status = 503
    error_type = "api_error"


class RequestTimedOut(HearthError):
    status = 504
    error_type = "api_error"


class JobFailed(HearthError):
    """A non-streaming request whose job ended in an error event."""

    def __init__(self, error: dict):
        super().__init__(error.get("message", "the job failed"))
        self.error_type = error.get("type", "api_error")
        self.status = {"cancelled": 499, "invalid_request_error": 400}.get(self.error_type, 500)


def error_body(error_type: str, message: str) -> dict:
    return {"type": "error", "error": {"type": error_type, "message": message}}


def error_response(status: int, error_type: str, message: str) -> JSONResponse:
    return JSONResponse(error_body(error_type, message), status_code=status)


async def hearth_error(request: Request, exc: HearthError) -> JSONResponse:
    return error_response(exc.status, exc.error_type, exc.message)


async def redis_error(request: Request, exc: RedisError) -> JSONResponse:
    log.warning("Redis unavailable for %s %s: %s", request.method, request.url.path, exc)
    return error_response(503, "api_error", f"the job queue is unavailable (Redis: {exc}); retry shortly")


async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
    error_type = {404: "not_found_error", 405: "invalid_request_error"}.get(exc.status_code, "api_error")
    return error_response(exc.status_code, error_type, str(exc.detail))


async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error in %s %s", request.method, request.url.path)
    return error_response(500, "api_error", "internal server error")


EXCEPTION_HANDLERS = {
    HearthError: hearth_error,
    RedisError: redis_error,
    HTTPException: http_error,
    Exception: unexpected_error,
}
