"""Ending the jobs of a dead worker, in seconds rather than minutes.

rq notices an abandoned job only when its started-registry entry expires,
minutes later. Hearth's workers beat every few seconds (`hearth:worker:*`),
so a started job whose worker has stopped beating is failed here the way
rq's own cleanup fails it, with the reason, and its log gets a terminal error
event, so streams and pollers learn it too.

A job that a worker dequeued but died before starting is still `queued` in
rq, yet in no queue list: a starting worker puts it back at the front.

A job queued for one worker (routed to the cache that holds its prompt, or
suspended there) goes to its model's queue, where any worker serving the
model takes it, as soon as that worker is dead or once it has waited longer
than HEARTH_AFFINITY_WAIT.

A Redis restart is not every worker's death: the heartbeats may expire while
Redis is down (or go with it). After a restart each worker has a whole
heartbeat TTL to beat again, as it has after any beat, before it is dead.
"""

from datetime import datetime, timezone
import logging
import math
import time

from redis import Redis
from redis.exceptions import ResponseError
from rq import Queue, Worker
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.job_lifecycle import record_job_failure

from hearth.contract import (
    PRIORITIES,
    cancel_key,
    is_hearth_queue,
    model_queue,
    priority_of,
    worker_heartbeat_key,
    worker_of,
)
from hearth.event_log import append_error
from hearth.models import model_key
from hearth.settings import Settings

log = logging.getLogger(__name__)

JOB_KEY_PREFIX = Job.redis_job_namespace_prefix


def hearth_queues(connection: Redis) -> list[Queue]:
    """Every queue a Hearth job was ever put in (rq's own list of queues)."""
    return [queue for queue in Queue.all(connection=connection) if is_hearth_queue(queue.name)]


def redis_uptime(connection: Redis) -> float:
    """Seconds since this Redis started; infinite for a server that does not say (fakeredis)."""
    try:
        return float(connection.info("server")["uptime_in_seconds"])
    except (ResponseError, KeyError):
        return math.inf


def beats(connection: Redis, worker_name: str, heartbeat_ttl: int = Settings.heartbeat_ttl) -> bool:
    """Is the worker alive as far as Redis can tell: its heartbeat is there, or Redis came back
    too recently for a live worker to have beaten since (read only when the heartbeat is missing)."""
    if connection.exists(worker_heartbeat_key(worker_name)):
        return True
    return redis_uptime(connection) < heartbeat_ttl


def worker_is_gone(connection: Redis, job_id: str, heartbeat_ttl: int = Settings.heartbeat_ttl) -> bool:
    """A started job whose worker no longer beats: two small reads, not the job's whole payload."""
    status, worker_name = connection.hmget(Job.key_for(job_id), "status", "worker_name")
    if status is None or status.decode() != JobStatus.STARTED.value:
        return False
    return not (worker_name and beats(connection, worker_name.decode(), heartbeat_ttl))


def fail_if_abandoned(connection: Redis, job: Job, event_ttl: int,
                      heartbeat_ttl: int = Settings.heartbeat_ttl) -> str | None:
    """Fail a started job whose worker no longer beats; returns the reason, or None if it lives.

    Its status is read afresh without refreshing `job`: a caller showing the job shows it as
    fetched, not finished by the time of this read yet without the end time and result it fetched."""
    if not worker_is_gone(connection, job.id, heartbeat_ttl):
        return None
    reason = f"the worker running job {job.id} ({job.worker_name or 'unknown'}) died"
    registry = Queue(job.origin, connection=connection).started_job_registry
    with connection.pipeline() as pipe:
        record_job_failure(job, reason, pipe)
        registry.remove_executions(job, pipeline=pipe)
        # Should the worker be merely stalled, it stops at its next token.
        pipe.set(cancel_key(job.id), 1, ex=event_ttl)
        pipe.execute()
    append_error(connection, job.id, "api_error", reason, event_ttl)
    log.warning("job %s failed: %s", job.id, reason)
    return reason


def fail_abandoned(connection: Redis, event_ttl: int, heartbeat_ttl: int = Settings.heartbeat_ttl) -> list[str]:
    """Every started job of a dead worker, failed; returns their ids."""
    failed = []
    for queue in hearth_queues(connection):
        for job_id in queue.started_job_registry.get_job_ids(cleanup=False):
            if not worker_is_gone(connection, job_id, heartbeat_ttl):
                continue  # the common case, checked every heartbeat: no payload fetched
            try:
                job = Job.fetch(job_id, connection=connection)
            except NoSuchJobError:
                continue
            if fail_if_abandoned(connection, job, event_ttl, heartbeat_ttl):
                failed.append(job_id)
    return failed


def _orphans(connection: Redis) -> set[str]:
    """Ids of jobs rq calls queued that are in no queue list."""
    listed = set()
    for queue in hearth_queues(connection):
        listed.update(queue.get_job_ids())
    orphans = set()
    for key in connection.scan_iter(match=f"{JOB_KEY_PREFIX}*", count=500, _type="HASH"):
        job_id = key.decode()[len(JOB_KEY_PREFIX):]
        if ":" in job_id or job_id in listed:
            continue
        status, origin = connection.hmget(key, "status", "origin")
        if status == JobStatus.QUEUED.value.encode() and origin and is_hearth_queue(origin.decode()):
            orphans.add(job_id)
    return orphans


def requeue_orphans(connection: Redis, grace: float = 1.0) -> list[str]:
    """Put back at the front of their queue the jobs a dead worker dequeued but never started.

    A live worker starts a job it dequeued within milliseconds: only jobs still
    orphaned after `grace` seconds are put back.
    """
    candidates = _orphans(connection)
    if not candidates:
        return []
    time.sleep(grace)
    requeued = []
    for job_id in sorted(candidates & _orphans(connection)):
        job = Job.fetch(job_id, connection=connection)
        Queue(job.origin, connection=connection).enqueue_job(job, at_front=True)
        log.warning("job %s was dequeued by a worker that died before starting it: queued again", job_id)
        requeued.append(job_id)
    return requeued


def fallback_queue(job: Job, queue_name: str) -> str:
    """The queue of the job's model at the job's priority: any worker serving the model takes from it."""
    return model_queue(priority_of(queue_name), model_key(job.args[0]["model"]))


def move_stranded(connection: Redis, wait: float, heartbeat_ttl: int = Settings.heartbeat_ttl) -> list[str]:
    """Jobs waiting for one worker that cannot take them, moved to the front of their model's queue:
    all of a dead worker's, those a live one kept waiting over `wait` seconds, and any left in the
    bare priority queues of Hearth before per-model routing. Returns their ids.

    Every worker runs this with its heartbeat: only the one whose LREM takes a job moves it.
    """
    moved = []
    now = datetime.now(timezone.utc)
    for queue in hearth_queues(connection):
        owner = worker_of(queue.name)
        if owner is None and queue.name not in PRIORITIES:
            continue  # a model's queue: where jobs go, not where they strand
        alive = owner is not None and beats(connection, owner, heartbeat_ttl)
        job_ids = queue.get_job_ids()
        if not job_ids:
            if not alive:
                _forget_empty_queue(queue)
            continue
        if alive:
            with connection.pipeline(transaction=False) as pipe:
                for job_id in job_ids:
                    pipe.hget(Job.key_for(job_id), "enqueued_at")
                enqueued = pipe.execute()
            job_ids = [job_id for job_id, at in zip(job_ids, enqueued)
                       if at is None or (now - _parse_time(at)).total_seconds() > wait]
        for job in reversed(Job.fetch_many(job_ids, connection=connection)):  # each to the front: in order
            if job is None or not queue.remove(job.id):
                continue  # expired, or taken meanwhile (by its worker, or another mover)
            target = Queue(fallback_queue(job, queue.name), connection=connection)
            target.enqueue_job(job, at_front=True)
            log.info("job %s: moved from %s to %s (%s)", job.id, queue.name, target.name,
                     "its worker waited too long" if alive else "its worker is gone")
            moved.append(job.id)
    return moved


def _parse_time(raw: bytes) -> datetime:
    return datetime.fromisoformat(raw.decode().replace("Z", "+00:00")).replace(tzinfo=timezone.utc)


def _forget_empty_queue(queue: Queue):
    """A dead worker's queue leaves `rq info` once nothing in its registries needs it."""
    registries = (queue.started_job_registry, queue.finished_job_registry, queue.failed_job_registry,
                  queue.canceled_job_registry, queue.deferred_job_registry, queue.scheduled_job_registry)
    if all(registry.count == 0 for registry in registries):
        queue.delete(delete_jobs=False)


def forget_dead_worker(connection: Redis, name: str, wait: float = 10.0):
    """Clear rq's record of a previous worker of this name that died without saying so, so this one
    may take the name (rq refuses a name whose worker it still believes alive). One whose
    heartbeat still beats is given `wait` seconds to be found dead."""
    key = Worker.redis_worker_namespace_prefix + name
    if not connection.exists(key) or connection.hexists(key, "death"):
        return
    deadline = time.monotonic() + wait
    while connection.exists(worker_heartbeat_key(name)):
        if time.monotonic() > deadline:
            raise RuntimeError(f"a live worker is already named {name!r} (set HEARTH_WORKER_NAME to another name)")
        time.sleep(0.5)
    Worker.find_by_key(key, connection=connection).register_death()
    log.info("worker %s: its previous run ended without a goodbye; rq's record of it is cleared", name)
