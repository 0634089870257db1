"""GET /metrics: Prometheus text format, rendered by prometheus-client.

The counters and histograms are the workers' (hearth/metrics.py: a Redis
hash every worker adds to); the gauges are read from Redis at scrape time
(hearth/status.py). Nothing is kept in this process, so every API process
answers the same and gunicorn may run as many as it likes.
"""

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from hearth import status
from hearth.contract import METRICS_KEY
from hearth.metrics import families, gauge


def exposition(redis) -> bytes:
    totals = {k.decode(): v.decode() for k, v in redis.hgetall(METRICS_KEY).items()}
    now = status.snapshot(redis, recent=0)
    found = families(totals) + gauges(now)

    class Collected:
        def collect(self):
            return found

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collected())
    return generate_latest(registry)


def gauges(now: dict) -> list:
    queues = now["queues"]
    cache = {}
    for models in now["cache"].values():
        for model, stats in models.items():
            entry = cache.setdefault(model, {"bytes": 0, "budget_bytes": 0, "evicted_blocks": 0})
            for key in entry:
                entry[key] += stats.get(key, 0)
    evicted = CounterMetricFamily("hearth_cache_evicted_blocks", "Prompt-cache blocks evicted, by served model "
                                  "(since each worker started).", labels=["model"])
    for model, entry in cache.items():
        evicted.add_metric([model], entry["evicted_blocks"])
    return [
        gauge("hearth_queue_depth", "Jobs waiting in each queue.", {n: q["depth"] for n, q in queues.items()}, "queue"),
        gauge("hearth_queue_oldest_age_seconds", "How long the oldest waiting job of each queue has waited.",
              {n: q["oldest_age_seconds"] for n, q in queues.items()}, "queue"),
        gauge("hearth_jobs_running", "Jobs in rq's started registries (holding a worker's slot).", {None: now["running"]}),
        gauge("hearth_jobs_suspended", "Background jobs suspended for interactive work.", {None: now["suspended"]}),
        gauge("hearth_workers", "Workers whose heartbeat is alive.", {None: len(now["workers"])}),
        gauge("hearth_cache_bytes", "Prompt-cache K/V held, by served model.", {m: e["bytes"] for m, e in cache.items()},
              "model"),
        gauge("hearth_cache_budget_bytes", "Prompt-cache budget, by served model.",
              {m: e["budget_bytes"] for m, e in cache.items()}, "model"),
        evicted,
    ]


async def metrics(request: Request) -> Response:
    body = await run_in_threadpool(exposition, request.app.state.jobs.connection)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
