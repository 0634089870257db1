"""GET /healthz, GET /v1/models and GET /v1/cache."""

import json

from redis.exceptions import RedisError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

from hearth.contract import affinity_key, cache_stats_key

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
    """The models live workers serve (by key; before any worker is up, the configured ones), then the aliases."""
    router = request.app.state.router
    data = [{"type": "model", "id": key, "display_name": model, "created_at": SERVED_SINCE}
            for key, model in router.served.items()]
    data += [{"type": "model", "id": alias, "display_name": f"{alias} -> {target}", "created_at": SERVED_SINCE}
             for alias, target in router.aliases.items() if "*" not in alias and "?" not in alias]
    return JSONResponse({"data": data, "has_more": False, "first_id": data[0]["id"] if data else None,
                         "last_id": data[-1]["id"] if data else None})


async def cache_stats(request: Request) -> JSONResponse:
    """Each live worker's prompt-cache counters per model, and how many prompt prefixes it holds
    for routing (`held_prefixes`: the fingerprints it publishes, hearth/affinity.py)."""
    redis = request.app.state.redis
    workers, held = {}, {}
    # Statistics outlive their worker by a day; show only workers whose heartbeat is alive.
    for name in await run_in_threadpool(request.app.state.jobs.live_workers):
        raw = await redis.get(cache_stats_key(name))
        if raw:
            workers[name] = json.loads(raw)
        held[name] = await redis.hlen(affinity_key(name))
    return JSONResponse({"workers": workers, "held_prefixes": held})
