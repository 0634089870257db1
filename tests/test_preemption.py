"""A background job steps aside for interactive work and resumes where it stopped (real rq, fakeredis).

With one slot (HEARTH_MAX_BATCH=1) every interactive arrival needs the
background job's slot; tests/test_scheduler.py covers slots shared by many.
"""

import pytest
from rq import Queue
from rq.job import Job, JobStatus

from api.job_views import job_view
from hearth.contract import (
    ERROR,
    MESSAGE_END,
    QUEUE_BACKGROUND,
    QUEUE_INTERACTIVE,
    model_queue,
    priority_of,
    suspended_key,
    worker_queue,
)
from hearth.settings import Settings
from tests.conftest import MODEL, ScriptedEngine, read_log
from tests.test_worker_jobs import request
from workers import scheduler


@pytest.fixture
def settings():
    return Settings(redis_url="redis://fake", model=MODEL, ping_interval=0.2, heartbeat_ttl=5, max_batch=1)


@pytest.fixture(autouse=True)
def flags_read_every_step(monkeypatch):
    # The worker reads the queues every few milliseconds; a scripted step takes microseconds.
    monkeypatch.setattr(scheduler, "FLAG_READ_SECONDS", 0)


def origin(redis, job_id) -> str:
    """The job's priority, from the queue it came from."""
    return priority_of(Job.fetch(job_id, connection=redis).origin)


LONG_ANSWER = ["<think>", "\nPlan", " the", " work", ".\n</think>", "\n\n"] + [f"word{i} " for i in range(40)]


class InteractiveArrivals:
    """on_step hook: enqueues an interactive job when the background job reaches given steps,
    and records what the world looks like while the interactive jobs run."""

    def __init__(self, jobs, redis, at_steps):
        self.jobs, self.redis, self.at_steps = jobs, redis, set(at_steps)
        self.interactive_ids, self.seen_while_interactive = [], []
        self.background_id = None

    def __call__(self, key, step):
        queue = origin(self.redis, key)
        if queue == QUEUE_BACKGROUND and step in self.at_steps:
            self.at_steps.discard(step)
            self.background_id = key
            job_id = self.jobs.new_job_id()
            self.jobs.enqueue(job_id, request(enable_thinking=False, max_tokens=3), priority=QUEUE_INTERACTIVE)
            self.interactive_ids.append(job_id)
        elif queue == QUEUE_INTERACTIVE and step == 0 and self.background_id:
            background = Job.fetch(self.background_id, connection=self.redis)
            self.seen_while_interactive.append(job_view(self.redis, background))


def untimed(data: dict) -> dict:
    """An event's data but for when things happened."""
    return {k: v for k, v in data.items() if k != "timing"}


def run_uninterrupted(redis, jobs, make_worker):
    job_id = jobs.new_job_id()
    jobs.enqueue(job_id, request(), priority=QUEUE_BACKGROUND)
    make_worker(ScriptedEngine(LONG_ANSWER)).work(burst=True)
    return Job.fetch(job_id, connection=redis).return_value(), read_log(redis, job_id)


def test_a_background_job_suspends_for_interactive_work_and_resumes_exactly(redis, jobs, make_worker):
    alone, alone_events = run_uninterrupted(redis, jobs, make_worker)

    arrivals = InteractiveArrivals(jobs, redis, at_steps=[3, 20])
    job_id = jobs.new_job_id()
    jobs.enqueue(job_id, request(), priority=QUEUE_BACKGROUND)
    engine = ScriptedEngine(LONG_ANSWER, on_step=arrivals)
    worker = make_worker(engine)
    worker.work(burst=True)

    # Same message, same events (but for cache usage), gapless across both suspensions.
    result = Job.fetch(job_id, connection=redis).return_value()
    assert result["content"] == alone["content"] and result["stop_reason"] == alone["stop_reason"]
    assert result["usage"]["output_tokens"] == alone["usage"]["output_tokens"] == len(LONG_ANSWER) + 1
    events = read_log(redis, job_id)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert [(e.type, untimed(e.data)) for e in events] == [(e.type, untimed(e.data)) for e in alone_events]
    # No token generated twice: each resumption went on from the context so far.
    assert engine.generated == len(LONG_ANSWER) + 1 + 2 * 3
    background_contexts = [c for c in engine.contexts if len(c) > engine.prompt_length]
    assert [len(c) - engine.prompt_length for c in background_contexts] == [4, 21]

    # While the interactive jobs ran, the background job was suspended, at the front of its queue.
    assert [v["status"] for v in arrivals.seen_while_interactive] == ["suspended", "suspended"]
    first = arrivals.seen_while_interactive[0]
    assert first["position"] == 0 and first["suspensions"] == 1
    assert first["progress"]["thinking"].strip() == "Plan the work"
    assert [v["suspensions"] for v in arrivals.seen_while_interactive] == [1, 2]
    for interactive in arrivals.interactive_ids:
        assert Job.fetch(interactive, connection=redis).get_status() == JobStatus.FINISHED

    # rq's registries: suspended, it went back to its worker's own queue (where its K/V is pinned)
    # and finished there once, nowhere else; the parked progress is gone.
    background = Queue(worker_queue(QUEUE_BACKGROUND, worker.name), connection=redis)
    assert Job.fetch(job_id, connection=redis).origin == background.name
    assert background.finished_job_registry.get_job_ids().count(job_id) == 1
    for queue in (background, Queue(model_queue(QUEUE_BACKGROUND, MODEL), connection=redis)):
        assert job_id not in queue.get_job_ids() + queue.started_job_registry.get_job_ids()
        assert job_id not in queue.failed_job_registry.get_job_ids()
    assert not redis.exists(suspended_key(job_id))
    assert job_view(redis, Job.fetch(job_id, connection=redis))["status"] == "finished"


def test_the_suspended_jobs_cache_is_pinned_until_it_resumes(redis, jobs, make_worker):
    arrivals = InteractiveArrivals(jobs, redis, at_steps=[8])
    held_while_interactive = []
    engine = ScriptedEngine(LONG_ANSWER)

    def on_step(key, step):
        arrivals(key, step)
        if origin(redis, key) == QUEUE_INTERACTIVE and step == 0:
            held_while_interactive.append([t for t in engine.prompt_cache.held if t is not None])

    engine.on_step = on_step
    job_id = jobs.new_job_id()
    jobs.enqueue(job_id, request(), priority=QUEUE_BACKGROUND)
    make_worker(engine).work(burst=True)

    [held] = held_while_interactive
    assert len(held) == 1 and len(held[0]) == engine.prompt_length + 9  # steps 0 to 8
    assert engine.prompt_cache.held == [None]  # released when the job resumed


def test_cancelling_a_suspended_job_ends_its_stream_and_it_never_resumes(redis, jobs, make_worker):
    cancelled = []

    def cancel_while_suspended(key, step):
        arrivals(key, step)
        if origin(redis, key) == QUEUE_INTERACTIVE and step == 0 and not cancelled:
            cancelled.append(jobs.cancel(arrivals.background_id))

    arrivals = InteractiveArrivals(jobs, redis, at_steps=[8])
    engine = ScriptedEngine(LONG_ANSWER, on_step=cancel_while_suspended)
    worker = make_worker(engine)
    job_id = jobs.new_job_id()
    jobs.enqueue(job_id, request(), priority=QUEUE_BACKGROUND)
    worker.work(burst=True)

    assert cancelled == ["queued"]
    assert engine.generated == 9 + 3  # the background job never ran again
    job = Job.fetch(job_id, connection=redis)
    assert job.get_status() == JobStatus.CANCELED
    events = read_log(redis, job_id)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert events[-1].type == ERROR and events[-1].data["error"]["type"] == "cancelled"
    assert job_view(redis, job)["status"] == "cancelled"
    # The next job the worker takes lets the pinned blocks go.
    jobs.enqueue(jobs.new_job_id(), request(max_tokens=2), priority=QUEUE_INTERACTIVE)
    worker.work(burst=True)
    assert engine.prompt_cache.held == [None] and worker.runtime.held == {}


def test_two_background_jobs_and_several_interactive_ones_all_finish(redis, jobs, make_worker):
    arrivals = InteractiveArrivals(jobs, redis, at_steps=[2, 9, 30])
    engine = ScriptedEngine(LONG_ANSWER, on_step=arrivals)
    first, second = jobs.new_job_id(), jobs.new_job_id()
    jobs.enqueue(first, request(), priority=QUEUE_BACKGROUND)
    jobs.enqueue(second, request(max_tokens=10), priority=QUEUE_BACKGROUND)
    make_worker(engine).work(burst=True)

    for job_id in [first, second, *arrivals.interactive_ids]:
        job = Job.fetch(job_id, connection=redis)
        assert job.get_status() == JobStatus.FINISHED, job_id
        events = read_log(redis, job_id)
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        assert [e.type for e in events].count(MESSAGE_END) == 1
    # The suspended job kept its place: the second background job started only after it finished.
    assert Job.fetch(second, connection=redis).started_at > Job.fetch(first, connection=redis).ended_at
    assert len(arrivals.interactive_ids) == 3


def test_an_interactive_job_is_never_suspended(redis, jobs, make_worker):
    def enqueue_more_interactive_work(key, step):
        if step == 2 and Job.fetch(key, connection=redis).meta.get("first", True):
            jobs.enqueue(jobs.new_job_id(), request(max_tokens=2), priority=QUEUE_INTERACTIVE,
                         meta={"first": False})

    job_id = jobs.new_job_id()
    jobs.enqueue(job_id, request(), priority=QUEUE_INTERACTIVE)
    engine = ScriptedEngine(LONG_ANSWER, on_step=enqueue_more_interactive_work)
    make_worker(engine).work(burst=True)
    assert Job.fetch(job_id, connection=redis).meta.get("suspensions") is None
    assert len(engine.contexts) == 2
