"""The resident MLX worker: an rq SimpleWorker that keeps its models loaded and decodes many jobs at once.

A SimpleWorker runs jobs in its own process (no fork per job), so models and
caches stay warm. rq's own loop still dequeues every job and records every
outcome; what changes is what happens between dequeues. A message job is
admitted to the scheduler (workers/scheduler.py) instead of being run to its
end, and while jobs decode, `dequeue_job_and_maintain_ttl` steps them,
taking another job at a token boundary whenever one waits and there is room.
Other jobs (token counts) run in line, as rq would run them.

rq's stop and kill commands assume a horse process to kill; here they name
jobs for the scheduler to stop at their next token, so `rq`'s own
`send_stop_job_command` stops one generation and leaves the others running.
"""

import contextlib
import json
import logging
import os
import socket
import threading
import time

from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq import Queue, Retry, SimpleWorker
from rq.command import parse_payload
from rq.exceptions import StopRequested
from rq.utils import now
from rq.worker import WorkerStatus

from hearth import reaper
from hearth.contract import (
    FAULT_KEY,
    MESSAGE_JOB,
    QUEUE_BACKGROUND,
    cache_stats_key,
    listening_order,
    suspended_key,
    worker_heartbeat_key,
    worker_queue,
)
from hearth.models import served_models
from hearth.settings import Settings
from workers import runtime
from workers.affinity import HeldPrefixes
from workers.faults import FaultInjectingEngine
from workers.jobs import JobCancelled
from workers.scheduler import Running, Scheduler

log = logging.getLogger(__name__)

# rq's worker key lives for minutes; while jobs decode it is refreshed this often.
RQ_HEARTBEAT_SECONDS = 30
# How often a live worker looks for jobs that a dead one dequeued and never started.
ORPHAN_SCAN_SECONDS = 30
# How long the published affinity fingerprints live (only a live worker's are read).
AFFINITY_TTL = 24 * 3600
# How long rq's command listener waits for a message before it looks again (and can be stopped).
COMMAND_POLL_SECONDS = 1.0


class Heartbeat(threading.Thread):
    """Refreshes a short-TTL liveness key, so a killed worker is noticed in seconds.

    rq's own worker key lives for minutes and a SimpleWorker does not refresh
    it while a job runs.
    """

    def __init__(self, connection: Redis, worker_name: str, announcement: dict, current_jobs, settings: Settings):
        super().__init__(name="hearth-heartbeat", daemon=True)
        self._redis = connection
        self._settings = settings
        self._key = worker_heartbeat_key(worker_name)
        self._ttl = settings.heartbeat_ttl
        self._announcement = announcement  # what it serves: models, slots, host
        self._current_jobs = current_jobs  # what each running job is doing, for the status page
        self._stopping = threading.Event()
        self._next_orphan_scan = time.monotonic() + ORPHAN_SCAN_SECONDS  # the worker's start just did one

    def run(self):
        while not self._stopping.is_set():
            try:
                value = json.dumps(dict(self._announcement, pid=os.getpid(), jobs=self._current_jobs()))
                self._redis.set(self._key, value, ex=self._ttl)
                # Several workers may share a Redis: the jobs of one that died fail, the jobs
                # queued for it (or waiting too long for it) go to any worker of their model.
                reaper.fail_abandoned(self._redis, self._settings.event_ttl, self._ttl)
                reaper.move_stranded(self._redis, self._settings.affinity_wait, self._ttl)
                if time.monotonic() >= self._next_orphan_scan:
                    # A worker killed between dequeuing a job and starting it (rare: a scan of every job).
                    self._next_orphan_scan = time.monotonic() + ORPHAN_SCAN_SECONDS
                    reaper.requeue_orphans(self._redis)
            except Exception:  # Redis may be restarting; keep beating
                log.warning("heartbeat: Redis unreachable", exc_info=log.isEnabledFor(logging.DEBUG))
            self._stopping.wait(self._ttl / 3)

    def stop(self):
        self._stopping.set()
        with contextlib.suppress(Exception):  # shutting down anyway
            self._redis.delete(self._key)


class HearthWorker(SimpleWorker):
    """Listens on its own queues, then its models' (contract.listening_order), under a name routing can use."""

    def __init__(self, connection: Redis, runtime: runtime.Runtime, name: str, **kwargs):
        super().__init__(listening_order(name, runtime.model_keys()), connection=connection, name=name, **kwargs)
        self.runtime = runtime
        self.held_prefixes = HeldPrefixes(name)
        self.batch_scheduler = Scheduler(runtime, self.connection, outcomes=self,
                                         queue_keys={queue.name: queue.key for queue in self.queues},
                                         held_prefixes=self.held_prefixes)
        self._kept_alive = time.monotonic()

    def execute_job(self, job, queue):
        dequeued_at = time.time()
        self._release_abandoned_holds()
        if job.func_name != MESSAGE_JOB:
            super().execute_job(job, queue)  # a token count: quick, in line
            if self.batch_scheduler.busy:
                self.set_state(WorkerStatus.BUSY)
            return
        execution = self.prepare_execution(job)
        self.prepare_job_execution(job)
        job.started_at = now()
        self.batch_scheduler.admit(job, queue, execution, dequeued_at)

    def dequeue_job_and_maintain_ttl(self, timeout, max_idle_time=None):
        """While jobs decode: step them, taking another job at a token boundary when one waits and there is room."""
        while self.batch_scheduler.busy:
            if not self._stop_requested and self.batch_scheduler.has_room() and any(self.batch_scheduler.queued.values()):
                dequeued = self._dequeue_now()
                if dequeued is not None:
                    return dequeued
            self.batch_scheduler.step()
            self._keep_alive()
        self.batch_scheduler.flush_metrics()
        if self._stop_requested:
            raise StopRequested()  # a warm shutdown waited for the running jobs; rq's loop ends here
        return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)

    def _dequeue_now(self):
        """rq's dequeue, without blocking: the running jobs must not wait for one."""
        dequeued = self.queue_class.dequeue_any(self._ordered_queues, None, connection=self.connection,
                                                job_class=self.job_class, serializer=self.serializer,
                                                death_penalty_class=self.death_penalty_class)
        if dequeued is None:
            self.batch_scheduler.queued = dict.fromkeys(self.batch_scheduler.queued, 0)  # another worker took them
            return None
        job, queue = dequeued
        self.batch_scheduler.queued[queue.name] = max(0, self.batch_scheduler.queued.get(queue.name, 0) - 1)
        job.redis_server_version = self.get_redis_server_version()
        self.log.info("Worker %s: %s: %s (%s)", self.name, queue.name, job.description, job.id)
        return dequeued

    def teardown(self):
        """rq's loop has ended (a warm shutdown, say): the jobs in flight finish first, as rq's current job would."""
        try:
            if self.batch_scheduler.busy:
                self.log.info("Worker %s: finishing %d running jobs before stopping", self.name,
                              len(self.batch_scheduler.running))
            while self.batch_scheduler.busy:
                self.batch_scheduler.step()
                self._keep_alive()
            self.batch_scheduler.flush_metrics()
        finally:
            self._rq_teardown()

    def _rq_teardown(self):
        """rq's, which records the worker's death in Redis: with Redis gone, a line in the log rather
        than a traceback on the way out (rq's record of the worker expires by itself)."""
        try:
            super().teardown()
        except (RedisConnectionError, RedisTimeoutError) as error:
            log.warning("worker %s stopped without reaching Redis to record it: %s", self.name, error)

    def heartbeat(self, timeout=None, pipeline=None):
        # rq sends its heartbeat as three commands; batched jobs pay for it at every admission, so one round trip.
        if pipeline is not None:
            return super().heartbeat(timeout, pipeline)
        with self.connection.pipeline() as pipe:
            super().heartbeat(timeout, pipe)
            pipe.execute()

    def _keep_alive(self):
        if time.monotonic() - self._kept_alive > RQ_HEARTBEAT_SECONDS:
            self._kept_alive = time.monotonic()
            self.heartbeat()

    # Outcomes: how the scheduler's jobs reach rq's registries, as rq's own perform_job records them.

    def finished(self, run: Running, value):
        # rq's Retry (a suspension) puts the job back at the front of the queue given here: this
        # worker's own, where its pinned K/V waits (after HEARTH_AFFINITY_WAIT any worker may take it).
        queue = run.queue
        if isinstance(value, Retry):
            queue = Queue(worker_queue(QUEUE_BACKGROUND, self.name), connection=self.connection)
            # rq clears the started registry of the job's origin, which the retry changes to `queue`.
            run.queue.started_job_registry.remove_execution(run.execution, run.job)
        self._finalize_success(run.job, queue, run.execution, value)
        self._after_job()

    def failed(self, run: Running, error: BaseException, stopped: bool):
        if stopped:
            self._stopped_job_id = run.job.id  # rq then records STOPPED, not FAILED
        self._finalize_failure(run.job, run.queue, run.execution, (type(error), error, error.__traceback__))
        self._after_job()

    def _after_job(self):
        self._publish_cache_stats()
        if not self.batch_scheduler.busy:
            self.set_state(WorkerStatus.IDLE)

    def handle_exception(self, job, *exc_info):
        # A cancel is an outcome, not a crash: the scheduler already logged it.
        if exc_info and isinstance(exc_info[1], JobCancelled):
            return
        super().handle_exception(job, *exc_info)

    # rq's commands (from the pub/sub thread): stop the job named, not a horse.

    def handle_payload(self, message):
        payload = parse_payload(message)
        if payload.get("command") == "stop-job" and payload.get("job_id") in self.batch_scheduler.running:
            self.batch_scheduler.stop_requested.add(payload["job_id"])
            return
        super().handle_payload(message)

    def subscribe(self):
        # rq's listener, polling each second instead of each minute: at a stop rq unsubscribes, then
        # joins this thread (redis-py 8.2 joins without a limit), and a thread that read the unsubscribe
        # reply first waits one whole poll for a subscription that never comes.
        self.log.info("Worker %s: subscribing to channel %s", self.name, self.pubsub_channel_name)
        self.pubsub = self.connection.pubsub()
        self.pubsub.subscribe(**{self.pubsub_channel_name: self.handle_payload})
        self.pubsub_thread = self.pubsub.run_in_thread(sleep_time=COMMAND_POLL_SECONDS, daemon=True,
                                                       exception_handler=self._pubsub_exception_handler)

    def kill_horse(self, sig=None):
        # rq names the job in _stopped_job_id (stop-job, stop-execution); without one, stop them all.
        named = self._stopped_job_id
        self.batch_scheduler.stop_requested.update([named] if named else self.batch_scheduler.job_ids())

    def _release_abandoned_holds(self):
        # A suspended job cancelled (or expired) while it waited: its pinned K/V may go.
        for job_id in list(self.runtime.held):
            if not self.connection.exists(suspended_key(job_id)):
                self.runtime.release(job_id)

    def _publish_cache_stats(self):
        """The prompt caches' counters and the prefixes they hold (for routing), in one round trip."""
        stats = {name: engine.prompt_cache.stats() for name, engine in self.runtime.engines.items()}
        try:
            with self.connection.pipeline(transaction=False) as pipe:
                pipe.set(cache_stats_key(self.name), json.dumps(stats), ex=24 * 3600)
                self.held_prefixes.publish(pipe, AFFINITY_TTL)
                pipe.execute()
        except Exception:  # statistics must never fail a job
            self.held_prefixes.lost()
            log.debug("could not publish cache statistics", exc_info=True)

    def announcement(self) -> dict:
        """What routing needs to know of this worker, sent with each heartbeat."""
        return {"models": self.runtime.model_keys(), "slots": self.batch_scheduler.max_batch,
                "host": socket.gethostname()}

    def work(self, *args, **kwargs):
        self.connection.delete(self.held_prefixes.key)  # a previous life's fingerprints: its cache is gone
        # Its own queues are in rq's list from the start (`rq info` shows them; a suspension's
        # retry into one would not add it).
        self.connection.sadd(Queue.redis_queues_keys, *(queue.key for queue in self.queues))
        heartbeat = Heartbeat(self.connection, self.name, self.announcement(), self.batch_scheduler.describe,
                              self.runtime.settings)
        heartbeat.start()
        try:
            return super().work(*args, **kwargs)
        finally:
            if self.batch_scheduler.busy:
                # rq's loop ended with jobs in flight (a cold shutdown outside a step): their clients hear why.
                self.batch_scheduler.abort(SystemExit("the worker stopped"))
            heartbeat.stop()


def load_engines(settings: Settings) -> dict:
    from workers.engine import Engine

    return {name: Engine(name, settings.cache_bytes, settings.cache_dir, settings.tools_first)
            for name in served_models(settings)}


def worker_name(connection: Redis, settings: Settings) -> str:
    """HEARTH_WORKER_NAME, else the host's name: the same after a restart, so its queue and its
    routing survive it; with the pid added while another live worker has it."""
    name = settings.worker_name or socket.gethostname().split(".")[0]
    if settings.worker_name or not connection.exists(worker_heartbeat_key(name)):
        return name
    return f"{name}.{os.getpid()}"


def run_worker(settings: Settings, burst: bool = False) -> bool:
    """Load the models once, then drain its queues, interactive before background, until stopped."""
    connection = Redis.from_url(settings.redis_url)
    engines = load_engines(settings)
    if settings.fault_injection:
        log.warning("fault injection is on: %s in Redis can fail a generation", FAULT_KEY)
        engines = {name: FaultInjectingEngine(engine, connection) for name, engine in engines.items()}
    rt = runtime.Runtime(settings=settings, engines=engines)
    runtime.install(rt)
    # Its name, and rq's record of its previous life (if it crashed) cleared, over a client of their
    # own: the worker sets the socket timeout its blocking dequeue needs on its pool, and a
    # connection pooled before that would keep redis-py's default of 5 s.
    with Redis.from_url(settings.redis_url) as setup:
        name = worker_name(setup, settings)
        reaper.forget_dead_worker(setup, name)
    worker = HearthWorker(connection, rt, name)
    # What a worker that died left behind: its started jobs failed, its dequeued ones queued again.
    reaper.fail_abandoned(connection, settings.event_ttl, settings.heartbeat_ttl)
    reaper.requeue_orphans(connection)
    log.info("worker %s ready: models %s, queues %s, %d slots", worker.name, ", ".join(rt.engines),
             ", ".join(q.name for q in worker.queues), settings.max_batch)
    try:
        return worker.work(burst=burst, logging_level=settings.log_level)
    finally:
        for engine in rt.engines.values():
            engine.save_cache()
