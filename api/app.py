"""The HTTP edge: one Starlette app on one port, served by `gunicorn -k asgi api.app:app`.

`create_app(settings)` wires everything; Redis clients belong to the
lifespan. Stateless: run as many copies as you like against one Redis.
"""

import contextlib
import logging

from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Mount, Route

from api.auth import ApiKeyMiddleware
from api.chat_completions import create_chat_completion
from api.count_tokens import count_tokens
from api.errors import EXCEPTION_HANDLERS
from api.falcon_app import create_falcon_app
from api.job_queue import JobQueue
from api.job_stream import job_event_stream
from api.live_hub import LiveHub
from api.live_workers import LiveWorkers
from api.messages import create_message
from api.metrics import metrics
from api.models import ModelRouter
from api.placement import Placement
from api.shutdown import watch_shutdown_signals
from api.status import cache_stats, healthz, list_models
from api.status_page import ROUTES as STATUS_PAGE
from hearth.settings import Settings

log = logging.getLogger(__name__)


def connect(settings: Settings) -> tuple[Redis, AsyncRedis]:
    """rq needs a sync client (bytes); streams use an async one."""
    return (Redis.from_url(settings.redis_url, health_check_interval=30),
            AsyncRedis.from_url(settings.redis_url, health_check_interval=30))


def create_app(settings: Settings | None = None, clients=connect) -> Starlette:
    settings = settings or Settings.from_env()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        sync_redis, app.state.redis = clients(settings)
        live_workers = app.state.live_workers
        with contextlib.suppress(RedisError):  # Redis may come up after the API: the task keeps trying
            await live_workers.refresh(app.state.redis)
        live_workers.start(app.state.redis)
        placement = Placement(sync_redis, live_workers, settings.affinity_backlog) if settings.affinity else None
        app.state.jobs = JobQueue(sync_redis, settings, placement)
        app.state.hub = LiveHub(app.state.redis)
        watch_shutdown_signals()
        log.info("API ready: models %s, Redis %s", ", ".join(app.state.router.served), settings.redis_url)
        try:
            yield
        finally:
            await live_workers.stop()
            await app.state.hub.close()
            await app.state.redis.aclose()
            sync_redis.close()

    routes = [
        Route("/v1/messages", create_message, methods=["POST"]),
        Route("/v1/messages/count_tokens", count_tokens, methods=["POST"]),
        Route("/v1/chat/completions", create_chat_completion, methods=["POST"]),
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v1/cache", cache_stats, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        *STATUS_PAGE,
        # Ahead of the Falcon mount: SSE is Starlette's job.
        Route("/v1/jobs/{job_id}/events", job_event_stream, methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers=EXCEPTION_HANDLERS,
                    middleware=[Middleware(ApiKeyMiddleware, keys=settings.api_keys)])
    app.state.settings = settings
    app.state.live_workers = LiveWorkers()
    app.state.router = ModelRouter(settings, app.state.live_workers)
    # Falcon resources (jobs, batches) keep their full paths when mounted.
    falcon_app = create_falcon_app(app.state)
    # A Mount matches only below its path; the collections themselves need their own routes.
    app.router.routes += [Route("/v1/jobs", falcon_app), Mount("/v1/jobs", app=falcon_app),
                          Route("/v1/messages/batches", falcon_app), Mount("/v1/messages/batches", app=falcon_app)]
    return app


def __getattr__(name):
    # `gunicorn api.app:app` builds the app from the environment on first access.
    if name == "app":
        return create_app()
    raise AttributeError(name)
