"""Ending the jobs of a dead worker, in seconds rather than minutes.

rq notices an abandoned job only when its started-registry entry expires,
minutes later. Hearth's workers beat every few seconds (`hearth:worker:*`),
so a started job whose worker has stopped beating is failed here the way
rq's own cleanup fails it, with the reason, and its log gets a terminal error
event, so streams and pollers learn it too.

A job that a worker dequeued but died before starting is still `queued` in
rq, yet in no queue list: a starting worker puts it back at the front.
"""

import logging
import time

from redis import Redis
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.job_lifecycle import record_job_failure

from hearth.contract import QUEUES, cancel_key, worker_heartbeat_key
from hearth.event_log import append_error

log = logging.getLogger(__name__)

JOB_KEY_PREFIX = Job.redis_job_namespace_prefix


def worker_is_gone(connection: Redis, job_id: str) -> bool:
    """A started job whose worker no longer beats: two small reads, not the job's whole payload."""
    status, worker_name = connection.hmget(Job.key_for(job_id), "status", "worker_name")
    if status is None or status.decode() != JobStatus.STARTED.value:
        return False
    return not (worker_name and connection.exists(worker_heartbeat_key(worker_name.decode())))


def fail_if_abandoned(connection: Redis, job: Job, event_ttl: int) -> str | None:
    """Fail a started job whose worker no longer beats; returns the reason, or None if it lives."""
    if job.get_status() != JobStatus.STARTED:
        return None
    if job.worker_name and connection.exists(worker_heartbeat_key(job.worker_name)):
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


def fail_abandoned(connection: Redis, event_ttl: int) -> list[str]:
    """Every started job of a dead worker, failed; returns their ids."""
    failed = []
    for name in QUEUES:
        for job_id in Queue(name, connection=connection).started_job_registry.get_job_ids(cleanup=False):
            if not worker_is_gone(connection, job_id):
                continue  # the common case, checked every heartbeat: no payload fetched
            try:
                job = Job.fetch(job_id, connection=connection)
            except NoSuchJobError:
                continue
            if fail_if_abandoned(connection, job, event_ttl):
                failed.append(job_id)
    return failed


def _orphans(connection: Redis) -> set[str]:
    """Ids of jobs rq calls queued that are in no queue list."""
    listed = set()
    for name in QUEUES:
        listed.update(Queue(name, connection=connection).get_job_ids())
    orphans = set()
    for key in connection.scan_iter(match=f"{JOB_KEY_PREFIX}*", count=500, _type="HASH"):
        job_id = key.decode()[len(JOB_KEY_PREFIX):]
        if ":" in job_id or job_id in listed:
            continue
        status, origin = connection.hmget(key, "status", "origin")
        if status == JobStatus.QUEUED.value.encode() and origin and origin.decode() in QUEUES:
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
