"""The resident MLX worker: an rq SimpleWorker that keeps its models loaded.

A SimpleWorker runs jobs in its own process (no fork per job), so models and
caches stay warm, but rq's stop and kill commands assume a horse process to
kill. Here they set an event that the generation loop checks between tokens,
so `rq`'s own `send_stop_job_command` stops a running generation too.
"""

import json
import logging
import os
import threading

from redis import Redis
from rq import SimpleWorker

from hearth import reaper
from hearth.contract import FAULT_KEY, QUEUES, cache_stats_key, suspended_key, worker_heartbeat_key
from hearth.models import served_models
from hearth.settings import Settings
from workers import runtime
from workers.faults import FaultInjectingEngine
from workers.jobs import JobCancelled

log = logging.getLogger(__name__)


class Heartbeat(threading.Thread):
    """Refreshes a short-TTL liveness key, so a killed worker is noticed in seconds.

    rq's own worker key lives for minutes and a SimpleWorker does not refresh
    it while a job runs.
    """

    def __init__(self, connection: Redis, worker_name: str, ttl: int, current_job_id, event_ttl: int):
        super().__init__(name="hearth-heartbeat", daemon=True)
        self._redis = connection
        self._event_ttl = event_ttl
        self._key = worker_heartbeat_key(worker_name)
        self._ttl = ttl
        self._current_job_id = current_job_id
        self._stopping = threading.Event()

    def run(self):
        while not self._stopping.is_set():
            try:
                value = json.dumps({"pid": os.getpid(), "job_id": self._current_job_id()})
                self._redis.set(self._key, value, ex=self._ttl)
                # Jobs of another worker that died (several workers share a Redis).
                reaper.fail_abandoned(self._redis, self._event_ttl)
            except Exception:  # noqa: BLE001 - Redis may be restarting; keep beating
                log.warning("heartbeat: Redis unreachable", exc_info=log.isEnabledFor(logging.DEBUG))
            self._stopping.wait(self._ttl / 3)

    def stop(self):
        self._stopping.set()
        try:
            self._redis.delete(self._key)
        except Exception:  # noqa: BLE001 - shutting down anyway
            pass


class HearthWorker(SimpleWorker):
    def __init__(self, *args, runtime: runtime.Runtime, **kwargs):
        super().__init__(*args, **kwargs)
        self.runtime = runtime
        runtime.mark_stopped = self._mark_stopped
        self._current_job_id_cached: str | None = None

    def kill_horse(self, sig=None):
        # No horse to kill: ask the running generation to stop at its next token.
        self.runtime.stop_requested.set()

    def execute_job(self, job, queue):
        self._release_abandoned_holds()
        self.runtime.stop_requested.clear()
        self._current_job_id_cached = job.id
        try:
            super().execute_job(job, queue)
        finally:
            self._current_job_id_cached = None
            self._publish_cache_stats()

    def _release_abandoned_holds(self):
        # A suspended job cancelled (or expired) while it waited: its pinned K/V may go.
        for job_id in list(self.runtime.held):
            if not self.connection.exists(suspended_key(job_id)):
                self.runtime.release(job_id)

    def _publish_cache_stats(self):
        stats = {name: engine.prompt_cache.stats() for name, engine in self.runtime.engines.items()}
        try:
            self.connection.set(cache_stats_key(self.name), json.dumps(stats), ex=24 * 3600)
        except Exception:  # noqa: BLE001 - statistics must never fail a job
            log.debug("could not publish cache statistics", exc_info=True)

    def handle_exception(self, job, *exc_info):
        # A cancel is an outcome, not a crash: the job function already logged it.
        if exc_info and isinstance(exc_info[1], JobCancelled):
            return
        super().handle_exception(job, *exc_info)

    def _mark_stopped(self, job_id: str):
        # rq marks a failed job STOPPED rather than FAILED when this matches.
        self._stopped_job_id = job_id

    def work(self, *args, **kwargs):
        heartbeat = Heartbeat(self.connection, self.name, self.runtime.settings.heartbeat_ttl,
                              lambda: self._current_job_id_cached, self.runtime.settings.event_ttl)
        heartbeat.start()
        try:
            return super().work(*args, **kwargs)
        finally:
            heartbeat.stop()


def load_engines(settings: Settings) -> dict:
    from workers.engine import Engine

    return {name: Engine(name, settings.cache_bytes, settings.cache_dir, settings.tools_first)
            for name in served_models(settings)}


def run_worker(settings: Settings, burst: bool = False) -> bool:
    """Load the models once, then drain `interactive` before `background` until stopped."""
    connection = Redis.from_url(settings.redis_url)
    engines = load_engines(settings)
    if settings.fault_injection:
        log.warning("fault injection is on: %s in Redis can fail a generation", FAULT_KEY)
        engines = {name: FaultInjectingEngine(engine, connection) for name, engine in engines.items()}
    rt = runtime.Runtime(settings=settings, engines=engines)
    runtime.install(rt)
    # First: the worker sets the socket timeout its blocking dequeue needs on the pool,
    # and a connection pooled before that would keep redis-py's default of 5 s.
    worker = HearthWorker(list(QUEUES), connection=connection, runtime=rt)
    # What a worker that died left behind: its started jobs failed, its dequeued ones queued again.
    reaper.fail_abandoned(connection, settings.event_ttl)
    reaper.requeue_orphans(connection)
    log.info("worker %s ready: models %s, queues %s", worker.name, ", ".join(rt.engines), ", ".join(QUEUES))
    try:
        return worker.work(burst=burst, logging_level=settings.log_level)
    finally:
        for engine in rt.engines.values():
            engine.save_cache()
