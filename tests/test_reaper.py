"""What a dead worker leaves behind: its started job failed in seconds, a dequeued one queued again,
the jobs queued for it moved to their model's queue."""

from datetime import datetime, timedelta, timezone
import json

import pytest
from rq import Queue, Worker
from rq.job import Job, JobStatus

from hearth import reaper
from hearth.contract import (
    ERROR,
    MESSAGE_JOB,
    QUEUE_BACKGROUND,
    QUEUE_INTERACTIVE,
    cancel_key,
    model_queue,
    worker_heartbeat_key,
    worker_queue,
)
from tests.conftest import MODEL, ScriptedEngine, read_log
from tests.test_worker_jobs import request


def started_by(jobs, redis, worker_name, priority=QUEUE_INTERACTIVE) -> Job:
    """A job as a worker leaves it once it has started it."""
    job_id = jobs.new_job_id()
    jobs.enqueue(job_id, request(), priority=priority)
    redis.lrem(f"rq:queue:{model_queue(priority, MODEL)}", 0, job_id)
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
    assert dead.id in Queue(model_queue(QUEUE_INTERACTIVE, MODEL), connection=redis).failed_job_registry.get_job_ids()
    assert "died" in dead.latest_result().exc_string
    [event] = read_log(redis, dead.id)
    assert event.type == ERROR and "died" in event.data["error"]["message"]
    assert redis.exists(cancel_key(dead.id))  # a merely stalled worker stops at its next token
    assert Job.fetch(alive.id, connection=redis).get_status() == JobStatus.STARTED
    # Once failed, it is left alone.
    assert reaper.fail_if_abandoned(redis, dead, event_ttl=60) is None


def test_a_redis_just_restarted_is_not_taken_for_its_workers_deaths(redis, jobs, monkeypatch):
    """Heartbeats expire while Redis is down: a worker has a whole TTL from Redis's return to beat again."""
    uptime = {"seconds": 2}  # fakeredis has no INFO; a real Redis's is read in tests/integration/test_faults.py
    monkeypatch.setattr(reaper, "redis_uptime", lambda connection: uptime["seconds"])
    job = started_by(jobs, redis, "busy")
    [queued] = queued_for(redis, worker_queue(QUEUE_INTERACTIVE, "busy"))

    assert reaper.fail_if_abandoned(redis, job, event_ttl=60, heartbeat_ttl=3) is None
    assert reaper.move_stranded(redis, wait=60, heartbeat_ttl=3) == []
    assert Job.fetch(job.id, connection=redis).get_status() == JobStatus.STARTED

    uptime["seconds"] = 3
    assert "died" in reaper.fail_if_abandoned(redis, job, event_ttl=60, heartbeat_ttl=3)
    assert reaper.move_stranded(redis, wait=60, heartbeat_ttl=3) == [queued]


def test_the_sweep_finds_started_jobs_through_rqs_registries(redis, jobs, make_worker):
    swept = []

    def worker_vanishes(key, step):
        if step == 2 and not swept:
            for heartbeat in redis.keys(worker_heartbeat_key("*")):
                redis.delete(heartbeat)
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
    assert redis.lpop(f"rq:queue:{model_queue(QUEUE_BACKGROUND, MODEL)}").decode() == orphan  # a dequeue, then death
    finished = started_by(jobs, redis, "ghost")
    finished.set_status(JobStatus.FINISHED)

    assert reaper.requeue_orphans(redis, grace=0) == [orphan]
    assert Queue(model_queue(QUEUE_BACKGROUND, MODEL), connection=redis).get_job_ids() == [orphan, waiting]
    assert reaper.requeue_orphans(redis, grace=0) == []


def queued_for(redis, queue_name: str, count: int = 1) -> list:
    """Jobs put straight into `queue_name`, as routing would for a worker's own queue."""
    queue = Queue(queue_name, connection=redis)
    return [queue.enqueue(MESSAGE_JOB, request()).id for _ in range(count)]


def queue_names(redis) -> set:
    return {queue.name for queue in Queue.all(connection=redis)}


def test_a_dead_workers_queued_jobs_go_to_the_front_of_their_models_queue(redis):
    already = queued_for(redis, model_queue(QUEUE_INTERACTIVE, MODEL))
    stranded = queued_for(redis, worker_queue(QUEUE_INTERACTIVE, "ghost"), 2)

    assert sorted(reaper.move_stranded(redis, wait=60)) == sorted(stranded)
    assert Queue(model_queue(QUEUE_INTERACTIVE, MODEL), connection=redis).get_job_ids() == stranded + already
    assert Job.fetch(stranded[0], connection=redis).origin == model_queue(QUEUE_INTERACTIVE, MODEL)
    # Emptied, with nothing in its registries, the dead worker's queue leaves `rq info`.
    assert reaper.move_stranded(redis, wait=60) == []
    assert worker_queue(QUEUE_INTERACTIVE, "ghost") not in queue_names(redis)


def test_a_live_worker_keeps_its_jobs_until_they_have_waited_too_long(redis):
    redis.set(worker_heartbeat_key("busy"), json.dumps({"pid": 1}), ex=60)
    [fresh] = queued_for(redis, worker_queue(QUEUE_BACKGROUND, "busy"))
    [stale] = queued_for(redis, worker_queue(QUEUE_BACKGROUND, "busy"))
    job = Job.fetch(stale, connection=redis)
    job.enqueued_at = datetime.now(timezone.utc).replace(tzinfo=None) - timedelta(seconds=30)
    job.save()

    assert reaper.move_stranded(redis, wait=10) == [stale]
    assert Queue(worker_queue(QUEUE_BACKGROUND, "busy"), connection=redis).get_job_ids() == [fresh]
    assert Queue(model_queue(QUEUE_BACKGROUND, MODEL), connection=redis).get_job_ids() == [stale]
    assert worker_queue(QUEUE_BACKGROUND, "busy") in queue_names(redis)


def test_jobs_left_in_the_queues_of_an_older_hearth_go_to_their_models_queue(redis):
    [old] = queued_for(redis, QUEUE_INTERACTIVE)
    assert reaper.move_stranded(redis, wait=60) == [old]
    assert Queue(model_queue(QUEUE_INTERACTIVE, MODEL), connection=redis).get_job_ids() == [old]


def test_a_restarted_worker_takes_over_the_name_its_crashed_run_left_behind(redis):
    Worker([model_queue(QUEUE_INTERACTIVE, MODEL)], name="mac", connection=redis).register_birth()  # then SIGKILL
    reaper.forget_dead_worker(redis, "mac", wait=0)
    Worker([model_queue(QUEUE_INTERACTIVE, MODEL)], name="mac", connection=redis).register_birth()

    # A live worker of that name is not forgotten.
    redis.set(worker_heartbeat_key("mac"), "{}", ex=60)
    with pytest.raises(RuntimeError, match="already named"):
        reaper.forget_dead_worker(redis, "mac", wait=0.1)
