"""GET /healthz, GET /v1/models and GET /v1/cache."""

import json

from redis.exceptions import RedisError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

from hearth.contract import cache_stats_key

# Anthropic's model objects carry a creation date; ours are served, not released.
SERVED_SINCE = "2026-01-01T00:00:00Z"


async def healthz(request: Request) -> JSONResponse:
    """200 when Redis answers and at least one worker is alive; 503 otherwise, saying which."""
    jobs = request.app.state.jobs
    try:
        await request.app.state.redis.ping()
        workers = await run_in_threadpool(jobs.live_workers)
        redis_ok = True
    except RedisError as exc:
        redis_ok, workers, error = False, [], str(exc)
    body = {"status": "ok" if redis_ok and workers else "degraded", "redis": redis_ok, "workers": workers}
    if not redis_ok:
        body["error"] = f"Redis unreachable: {error}"
    elif not workers:
        body["error"] = "no worker is alive: start one with `hearth worker`"
    return JSONResponse(body, status_code=200 if body["status"] == "ok" else 503)


async def list_models(request: Request) -> JSONResponse:
    router = request.app.state.router
    data = [{"type": "model", "id": name, "display_name": name, "created_at": SERVED_SINCE} for name in router.served]
    data += [{"type": "model", "id": alias, "display_name": f"{alias} -> {target}", "created_at": SERVED_SINCE}
             for alias, target in router.aliases.items() if "*" not in alias and "?" not in alias]
    return JSONResponse({"data": data, "has_more": False, "first_id": data[0]["id"], "last_id": data[-1]["id"]})


async def cache_stats(request: Request) -> JSONResponse:
    """Each live worker's prompt-cache counters, per model."""
    redis = request.app.state.redis
    workers = {}
    # Statistics outlive their worker by a day; show only workers whose heartbeat is alive.
    for name in await run_in_threadpool(request.app.state.jobs.live_workers):
        raw = await redis.get(cache_stats_key(name))
        if raw:
            workers[name] = json.loads(raw)
    return JSONResponse({"workers": workers})
