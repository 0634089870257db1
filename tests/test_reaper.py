"""What a dead worker leaves behind: its started job failed in seconds, a dequeued one queued again."""

import json

from rq import Queue
from rq.job import Job, JobStatus

from hearth import reaper
from hearth.contract import ERROR, QUEUE_BACKGROUND, QUEUE_INTERACTIVE, cancel_key, worker_heartbeat_key
from tests.conftest import ScriptedEngine, read_log
from tests.test_worker_jobs import request


def started_by(jobs, redis, worker_name, priority=QUEUE_INTERACTIVE) -> Job:
    """A job as a worker leaves it once it has started it."""
    job_id = jobs.new_job_id()
    jobs.enqueue(job_id, request(), priority=priority)
    redis.lrem(f"rq:queue:{priority}", 0, job_id)
    job = Job.fetch(job_id, connection=redis)
    job.set_status(JobStatus.STARTED)
    job.worker_name = worker_name
    job.save()
    return job


def test_a_dead_workers_started_job_is_failed_with_its_reason(redis, jobs):
    redis.set(worker_heartbeat_key("alive"), json.dumps({"pid": 1}), ex=60)
    dead = started_by(jobs, redis, "ghost")
    alive = started_by(jobs, redis, "alive", QUEUE_BACKGROUND)

    assert reaper.fail_if_abandoned(redis, alive, event_ttl=60) is None
    reason = reaper.fail_if_abandoned(redis, dead, event_ttl=60)

    assert "died" in reason and "ghost" in reason
    dead = Job.fetch(dead.id, connection=redis)
    assert dead.get_status() == JobStatus.FAILED
    assert dead.id in Queue(QUEUE_INTERACTIVE, connection=redis).failed_job_registry.get_job_ids()
    assert "died" in dead.latest_result().exc_string
    [event] = read_log(redis, dead.id)
    assert event.type == ERROR and "died" in event.data["error"]["message"]
    assert redis.exists(cancel_key(dead.id))  # a merely stalled worker stops at its next token
    assert Job.fetch(alive.id, connection=redis).get_status() == JobStatus.STARTED
    # Once failed, it is left alone.
    assert reaper.fail_if_abandoned(redis, dead, event_ttl=60) is None


def test_the_sweep_finds_started_jobs_through_rqs_registries(redis, jobs, make_worker):
    swept = []

    def worker_vanishes(key, step):
        if step == 2 and not swept:
            for key in redis.keys(worker_heartbeat_key("*")):
                redis.delete(key)
            swept.append(reaper.fail_abandoned(redis, event_ttl=60))

    job_id = jobs.new_job_id()
    jobs.enqueue(job_id, request())
    make_worker(ScriptedEngine(["word "] * 20, on_step=worker_vanishes)).work(burst=True)
    assert swept == [[job_id]]
    assert ERROR in [e.type for e in read_log(redis, job_id)]


def test_a_job_dequeued_by_a_worker_that_died_is_queued_again_at_the_front(redis, jobs):
    waiting, orphan = jobs.new_job_id(), jobs.new_job_id()
    jobs.enqueue(orphan, request(), priority=QUEUE_BACKGROUND)
    jobs.enqueue(waiting, request(), priority=QUEUE_BACKGROUND)
    assert redis.lpop(f"rq:queue:{QUEUE_BACKGROUND}").decode() == orphan  # a dequeue, then the worker died
    finished = started_by(jobs, redis, "ghost")
    finished.set_status(JobStatus.FINISHED)

    assert reaper.requeue_orphans(redis, grace=0) == [orphan]
    assert Queue(QUEUE_BACKGROUND, connection=redis).get_job_ids() == [orphan, waiting]
    assert reaper.requeue_orphans(redis, grace=0) == []
