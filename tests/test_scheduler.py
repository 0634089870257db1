"""Many jobs in one worker: slots, admission, jobs joining and leaving a batch (real rq, fakeredis)."""

import json

import pytest
from rq import Queue
from rq.job import Job, JobStatus
from rq.utils import now

from hearth.contract import (
    ERROR,
    MESSAGE_END,
    PRIORITIES,
    QUEUE_BACKGROUND,
    QUEUE_INTERACTIVE,
    GenerationRequest,
    model_queue,
    priority_of,
)
from hearth.reaper import hearth_queues
from hearth.settings import Settings
from tests.conftest import MODEL, BurstWorker, ScriptedEngine, read_log
from tests.test_worker_jobs import request
from workers import runtime
from workers.jobs import MessageJob
from workers.scheduler import ADMISSION_HEADROOM_TOKENS

WORDS = [f"w{i} " for i in range(30)]


def settings_with(**changes) -> Settings:
    return Settings(redis_url="redis://fake", model=MODEL, ping_interval=0.2, heartbeat_ttl=5, **changes)


@pytest.fixture
def settings():
    return settings_with(max_batch=3)


def enqueue(jobs, n=1, priority=QUEUE_INTERACTIVE, **changes) -> list:
    ids = []
    for _ in range(n):
        ids.append(jobs.new_job_id())
        jobs.enqueue(ids[-1], request(enable_thinking=False, **changes), priority=priority)
    return ids


def result_of(redis, job_id) -> dict:
    return Job.fetch(job_id, connection=redis).return_value()


def text_of(redis, job_id) -> str:
    return "".join(b.get("text", "") for b in result_of(redis, job_id)["content"])


def registries(redis) -> dict:
    """Per priority, the jobs rq has in each state, over the model's queue and the workers' own."""
    out = {name: {"queued": set(), "started": set(), "finished": set(), "failed": set()} for name in PRIORITIES}
    for queue in hearth_queues(redis):
        states = out[priority_of(queue.name)]
        states["queued"] |= set(queue.get_job_ids())
        states["started"] |= set(queue.started_job_registry.get_job_ids())
        states["finished"] |= set(queue.finished_job_registry.get_job_ids())
        states["failed"] |= set(queue.failed_job_registry.get_job_ids())
    return out


def test_jobs_decode_together_in_the_same_steps_and_each_gets_its_own_answer(redis, jobs, make_worker):
    ids = enqueue(jobs, 3)
    engine = ScriptedEngine(WORDS)
    make_worker(engine).work(burst=True)
    assert any(set(step) == set(ids) for step in engine.steps), "the three jobs never shared a step"
    for job_id in ids:
        assert text_of(redis, job_id) == "".join(WORDS)
        events = read_log(redis, job_id)
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        assert [e.type for e in events].count(MESSAGE_END) == 1


def test_slots_bound_the_batch_and_rq_shows_every_job_where_it_is(redis, jobs, make_worker):
    ids = enqueue(jobs, 5)
    seen = []

    def sample(key, index):
        if index == 3:
            seen.append((set(engine.steps[-1]), registries(redis)[QUEUE_INTERACTIVE]))

    engine = ScriptedEngine(WORDS, on_step=sample)
    make_worker(engine).work(burst=True)
    assert max(len(step) for step in engine.steps) == 3
    for decoding, rq_view in seen:
        # Every job decoding is started in rq, every other job is queued or already finished.
        assert rq_view["started"] == decoding
        assert rq_view["queued"] | rq_view["finished"] | decoding == set(ids)
        assert not rq_view["queued"] & rq_view["finished"]
    final = registries(redis)[QUEUE_INTERACTIVE]
    assert final["finished"] == set(ids) and not final["started"] and not final["queued"]


def test_jobs_join_and_leave_a_running_batch_without_disturbing_the_others(redis, jobs, make_worker):
    thinking = ["<think>", "\nhm"] + [" hm"] * 20
    pieces = thinking + ["</think>", "\n\nAnswer", " STOP", " more"] + WORDS
    long_runner = enqueue(jobs)[0]
    short = enqueue(jobs, max_tokens=3)[0]
    stopped = enqueue(jobs, stop_sequences=[" STOP"])[0]
    budgeted = jobs.new_job_id()
    jobs.enqueue(budgeted, request(enable_thinking=True, thinking_budget=5))
    cancelled = enqueue(jobs)[0]

    def cancel_one(key, index):
        if key == cancelled and index == 4:
            jobs.cancel(cancelled)

    engine = ScriptedEngine(pieces, on_step=cancel_one, then=["Done", "."])
    worker = make_worker(engine)
    worker.batch_scheduler.max_batch = 8
    worker.work(burst=True)

    assert result_of(redis, short)["stop_reason"] == "max_tokens"
    assert result_of(redis, short)["usage"]["output_tokens"] == 3
    stop = result_of(redis, stopped)
    assert stop["stop_reason"] == "stop_sequence" and stop["content"][-1]["text"].endswith("Answer")
    budget = result_of(redis, budgeted)
    assert [b["type"] for b in budget["content"]] == ["thinking", "text"] and budget["content"][1]["text"] == "Done."
    assert Job.fetch(cancelled, connection=redis).get_status() == JobStatus.STOPPED
    assert read_log(redis, cancelled)[-1].data["error"]["type"] == "cancelled"
    # The one that ran on saw nothing of it: its whole answer, in order.
    assert result_of(redis, long_runner)["usage"]["output_tokens"] == len(pieces) + 1
    assert "".join(b.get("text", "") for b in result_of(redis, long_runner)["content"]).endswith("".join(WORDS))
    # All five started together, and each left at its own step.
    assert set(engine.steps[1]) == {long_runner, short, stopped, budgeted, cancelled}
    assert engine.steps[-1] == [long_runner]


def test_rq_stop_job_command_stops_one_sequence_and_leaves_the_others(redis, jobs, make_worker):
    first, second = enqueue(jobs, 2)
    holder = {}

    def stop_second(key, index):
        if key == second and index == 3:
            # What the worker's pub/sub thread does on `rq`'s send_stop_job_command.
            holder["worker"].handle_payload({"data": json.dumps({"command": "stop-job", "job_id": second}).encode()})

    holder["worker"] = make_worker(ScriptedEngine(WORDS, on_step=stop_second))
    holder["worker"].work(burst=True)
    assert Job.fetch(second, connection=redis).get_status() == JobStatus.STOPPED
    assert Job.fetch(first, connection=redis).get_status() == JobStatus.FINISHED
    assert text_of(redis, first) == "".join(WORDS)


def test_a_job_whose_own_work_fails_fails_alone(redis, jobs, make_worker, monkeypatch):
    doomed, healthy = enqueue(jobs, 2)
    original = MessageJob.on_output

    def on_output(self, output):
        if self.job_id == doomed and self.progress.output_tokens == 2:
            raise ValueError("a parser bug")
        return original(self, output)

    monkeypatch.setattr(MessageJob, "on_output", on_output)
    make_worker(ScriptedEngine(WORDS)).work(burst=True)
    assert Job.fetch(doomed, connection=redis).get_status() == JobStatus.FAILED
    assert "a parser bug" in read_log(redis, doomed)[-1].data["error"]["message"]
    assert text_of(redis, healthy) == "".join(WORDS)


def test_a_job_past_its_timeout_fails_and_the_others_go_on(redis, jobs, make_worker):
    slow = jobs.new_job_id()
    jobs.enqueue(slow, request(enable_thinking=False, max_tokens=1000))
    job = Job.fetch(slow, connection=redis)
    job.timeout = 1
    job.save()
    quick = enqueue(jobs, max_tokens=5)[0]
    make_worker(ScriptedEngine(["w "] * 1000, delay=0.005)).work(burst=True)
    assert Job.fetch(slow, connection=redis).get_status() == JobStatus.FAILED
    last = read_log(redis, slow)[-1]
    assert last.type == ERROR and "timeout" in last.data["error"]["message"]
    assert Job.fetch(quick, connection=redis).get_status() == JobStatus.FINISHED


def test_interactive_work_takes_a_free_slot_without_suspending_anything(redis, jobs, make_worker):
    background = enqueue(jobs, 2, priority=QUEUE_BACKGROUND)
    arrived = []

    def arrive(key, index):
        if key == background[0] and index == 4 and not arrived:
            arrived.extend(enqueue(jobs, max_tokens=3))

    make_worker(ScriptedEngine(WORDS, on_step=arrive)).work(burst=True)
    for job_id in background + arrived:
        assert Job.fetch(job_id, connection=redis).get_status() == JobStatus.FINISHED
        assert Job.fetch(job_id, connection=redis).meta.get("suspensions") is None


def test_with_every_slot_taken_by_background_jobs_the_newest_steps_aside_for_interactive_work(
        redis, jobs, make_worker):
    background = enqueue(jobs, 3, priority=QUEUE_BACKGROUND)
    arrived, seen = [], []

    def arrive(key, index):
        if key == background[0] and index == 4 and not arrived:
            arrived.extend(enqueue(jobs, max_tokens=3))
        if arrived and key == arrived[0] and index == 0:
            seen.append(registries(redis)[QUEUE_BACKGROUND])

    engine = ScriptedEngine(WORDS, on_step=arrive)
    make_worker(engine).work(burst=True)
    newest = background[-1]
    # The interactive job decoded while the newest background job waited at the front of its queue.
    [while_interactive] = seen
    assert while_interactive["queued"] == {newest} and newest not in while_interactive["started"]
    assert Job.fetch(newest, connection=redis).meta["suspensions"] == 1
    assert Job.fetch(background[0], connection=redis).meta.get("suspensions") is None
    # Resumed exactly: every background job has its whole answer, events without a gap.
    for job_id in background:
        assert text_of(redis, job_id) == "".join(WORDS)
        events = read_log(redis, job_id)
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert Job.fetch(arrived[0], connection=redis).get_status() == JobStatus.FINISHED


def test_a_job_that_does_not_fit_in_memory_waits_its_turn(redis, jobs, make_worker):
    ids = enqueue(jobs, 3, max_tokens=25)
    engine = ScriptedEngine(WORDS, bytes_per_token=1000)
    worker = make_worker(engine)
    # A sequence is weighed at its prompt plus the admission headroom; two fit, not three.
    prompt = engine.render(GenerationRequest.from_dict(request(enable_thinking=False))).tokens
    weight = 1000 * (len(prompt) + ADMISSION_HEADROOM_TOKENS)
    worker.batch_scheduler.budget_bytes = int(2.5 * weight)
    worker.work(burst=True)
    assert max(len(step) for step in engine.steps) == 2
    for job_id in ids:
        assert Job.fetch(job_id, connection=redis).get_status() == JobStatus.FINISHED


def test_the_fast_model_keeps_moving_beside_a_batch_of_main_model_turns(redis, jobs, settings):
    main, fast = ScriptedEngine(WORDS * 3), ScriptedEngine(["quick", " answer"])
    rt = runtime.Runtime(settings=settings, engines={MODEL: main, "fast": fast})
    runtime.install(rt)
    try:
        turns = enqueue(jobs, 2)
        side_call = jobs.new_job_id()
        jobs.enqueue(side_call, request(model="fast", enable_thinking=False))
        BurstWorker(redis, rt, "worker").work(burst=True)
    finally:
        runtime.install(None)
    assert text_of(redis, side_call) == "quick answer"
    side = Job.fetch(side_call, connection=redis)
    for turn in turns:
        assert side.ended_at < Job.fetch(turn, connection=redis).ended_at
    # Both models stepped in the same iterations while the side call ran.
    assert fast.steps and len(fast.steps) < len(main.steps)


@pytest.mark.parametrize("when", ["mid-step", "right after an admission"])
def test_a_warm_shutdown_lets_the_running_jobs_finish_and_leaves_the_queued_ones_queued(
        redis, jobs, make_worker, when):
    running = enqueue(jobs, 3)
    waiting = []

    def shut_down():
        # What rq's SIGTERM handler does.
        worker._shutdown_requested_date = now()
        worker._shutdown()

    def mid_step(key, index):
        if when == "mid-step" and key == running[0] and index == 2 and not waiting:
            waiting.extend(enqueue(jobs, 2))
            shut_down()

    worker = make_worker(ScriptedEngine(WORDS, on_step=mid_step))
    admit = worker.batch_scheduler.admit

    def admit_then_shut_down(job, *args):
        admit(job, *args)
        if when != "mid-step" and job.id == running[-1]:
            waiting.extend(enqueue(jobs, 2))
            shut_down()  # rq's loop now ends before its next dequeue, with three jobs in flight

    worker.batch_scheduler.admit = admit_then_shut_down
    worker.work(burst=True)
    for job_id in running:
        assert Job.fetch(job_id, connection=redis).get_status() == JobStatus.FINISHED
    assert set(Queue(model_queue(QUEUE_INTERACTIVE, MODEL), connection=redis).get_job_ids()) == set(waiting)
