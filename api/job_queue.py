"""The API's side of the queue: enqueue, cancel and inspect jobs with rq.

rq is synchronous, so handlers call these through a thread
(`starlette.concurrency.run_in_threadpool`). The job function is named by its
import path: the API never imports the worker's code.
"""

import contextlib
from dataclasses import dataclass
import logging
import secrets

from redis import Redis
from rq import Queue
from rq.command import send_stop_job_command
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job, JobStatus
from rq.results import Result

from api.errors import Conflict, JobFailed, NotFound, QueueUnavailable
from api.job_views import status_of
from hearth.contract import (
    MESSAGE_JOB,
    QUEUE_INTERACTIVE,
    WORKER_HEARTBEAT_PATTERN,
    cancel_key,
    model_queue,
    suspended_key,
)
from hearth.event_log import append_error
from hearth.reaper import fail_if_abandoned, hearth_queues, worker_is_gone
from hearth.settings import Settings

log = logging.getLogger(__name__)

WAITING = {JobStatus.QUEUED, JobStatus.DEFERRED, JobStatus.SCHEDULED}
TERMINAL = {JobStatus.FINISHED, JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED}


@dataclass
class JobState:
    status: str | None  # an rq JobStatus value, or None once the job has expired
    worker_alive: bool  # for a started job: does its worker still beat?


class JobQueue:
    def __init__(self, connection: Redis, settings: Settings, placement=None):
        self.connection = connection
        self.settings = settings
        self.placement = placement  # api/placement.py; without one, every job goes to its model's queue

    @staticmethod
    def new_job_id() -> str:
        # Unguessable: a job id is all it takes to read a job's output.
        return secrets.token_hex(16)

    def enqueue(self, job_id: str, request: dict, priority: str = QUEUE_INTERACTIVE, description: str = "",
                function: str = MESSAGE_JOB, meta: dict | None = None, result_ttl: int | None = None,
                owner: str | None = None) -> str:
        """Enqueue under an id chosen beforehand, so its feed can be opened first.

        `request["model"]` is the model's key (api/models.py); `owner` (a hash of the caller's API
        key) keeps the job visible to its submitter only.
        """
        ttl = result_ttl or self.settings.result_ttl
        meta = dict(meta or {}, owner=owner)
        name = (self.placement.queue_for(request, priority) if self.placement
                else model_queue(priority, request["model"]))
        Queue(name, connection=self.connection).enqueue(
            function,
            request,
            job_id=job_id,
            job_timeout=self.settings.job_timeout,
            result_ttl=ttl,
            failure_ttl=ttl,
            description=description or function,
            meta=meta,
        )
        return job_id

    def recent(self, status: str | None = None, limit: int = 20, after_id: str | None = None,
               owner: str | None = None) -> tuple[list, bool]:
        """Message jobs of every queue, newest first; `after_id` pages on. Returns (jobs, has_more)."""
        ids = set()
        for queue in hearth_queues(self.connection):
            ids.update(queue.get_job_ids())
            for registry in (queue.started_job_registry, queue.finished_job_registry,
                             queue.failed_job_registry, queue.canceled_job_registry):
                ids.update(registry.get_job_ids())
        jobs = [j for j in Job.fetch_many(sorted(ids), connection=self.connection)
                if j is not None and j.func_name == MESSAGE_JOB and (owner is None or j.meta.get("owner") == owner)]
        jobs.sort(key=lambda j: (j.created_at, j.id), reverse=True)
        if status:
            jobs = [j for j in jobs if status_of(self.connection, j, refresh=False) == status]
        if after_id:
            position = next((i for i, j in enumerate(jobs) if j.id == after_id), None)
            if position is None:
                raise NotFound(f"after_id {after_id}: no such job in this listing")
            jobs = jobs[position + 1:]
        return jobs[:limit], len(jobs) > limit

    def wait_for_result(self, job_id: str, timeout: float):
        """Block until a short job returns (rq's result stream, no polling)."""
        result = self.fetch(job_id).latest_result(timeout=max(1, int(timeout)))
        if result is None:
            self.cancel_quietly(job_id)
            raise QueueUnavailable(f"job {job_id} did not finish within {timeout:.0f}s: is a worker running?")
        if result.type != Result.Type.SUCCESSFUL:
            raise JobFailed({"type": "api_error", "message": (result.exc_string or "job failed").strip().splitlines()[-1]})
        return result.return_value

    def claim(self, key: str, job_id: str) -> str | None:
        """Record `job_id` as serving `key`, unless a job still queued or running does: return that one."""
        for _ in range(3):
            if self.connection.set(key, job_id, nx=True, ex=self.settings.event_ttl):
                return None
            existing = self.connection.get(key)
            if existing is None:
                continue  # expired meanwhile
            existing = existing.decode()
            if self.state(existing).status in ("queued", "started") and not self.connection.exists(cancel_key(existing)):
                return existing
            self.connection.set(key, job_id, ex=self.settings.event_ttl)
            return None
        return None

    def fetch(self, job_id: str, owner: str | None = None) -> Job:
        """The job; another key's job is as invisible as a missing one."""
        try:
            job = Job.fetch(job_id, connection=self.connection)
        except NoSuchJobError:
            job = None
        if job is None or (owner is not None and job.meta.get("owner") != owner):
            raise NotFound(f"job {job_id} not found (it may have expired)")
        if job.get_status(refresh=False) == JobStatus.STARTED and fail_if_abandoned(
                self.connection, job, self.settings.event_ttl, self.settings.heartbeat_ttl):
            job.refresh()  # a dead worker's job, failed just now: shown failed
        return job

    def cancel(self, job_id: str, owner: str | None = None) -> str:
        """Cancel a job: a waiting one never runs, a running one stops at its next token."""
        job = self.fetch(job_id, owner)
        status = job.get_status()
        if status in TERMINAL:
            raise Conflict(f"job {job_id} already ended ({status.value})")
        # The flag covers every race: a job dequeued but not yet started sees it first thing.
        self.connection.set(cancel_key(job_id), 1, ex=self.settings.event_ttl)
        if status in WAITING:
            # InvalidJobOperation: it was cancelled meanwhile.
            with contextlib.suppress(InvalidJobOperation):
                job.cancel()
            self._end_suspended(job_id)
        elif status == JobStatus.STARTED:
            # InvalidJobOperation: between dequeue and start, where the flag stops it.
            with contextlib.suppress(InvalidJobOperation):
                send_stop_job_command(self.connection, job_id)
        log.info("job %s: cancel requested while %s", job_id, status.value)
        return status.value

    def _end_suspended(self, job_id: str):
        """A suspended job will not run again, so no worker writes its last event: write it here."""
        if self.connection.delete(suspended_key(job_id)):
            append_error(self.connection, job_id, "cancelled", f"job {job_id} was cancelled", self.settings.event_ttl)

    def cancel_quietly(self, job_id: str):
        """For a client that went away: cancel unless the job already ended."""
        try:
            self.cancel(job_id)
        except (Conflict, NotFound):
            pass

    def state(self, job_id: str) -> JobState:
        """Read on every quiet tick of every stream: the job's status, not its whole payload."""
        status = self.connection.hget(Job.key_for(job_id), "status")
        if status is None:
            return JobState(status=None, worker_alive=False)
        if worker_is_gone(self.connection, job_id, self.settings.heartbeat_ttl):
            with contextlib.suppress(NoSuchJobError):
                fail_if_abandoned(self.connection, Job.fetch(job_id, connection=self.connection),
                                  self.settings.event_ttl, self.settings.heartbeat_ttl)
            return JobState(status=status.decode(), worker_alive=False)
        return JobState(status=status.decode(), worker_alive=True)

    def live_workers(self) -> list[str]:
        prefix = WORKER_HEARTBEAT_PATTERN[:-1]
        keys = self.connection.scan_iter(match=WORKER_HEARTBEAT_PATTERN, count=100)
        return sorted(k.decode()[len(prefix):] for k in keys)
