"""One job's life in the worker, and its outcomes in rq, through real rq on fakeredis."""

import threading
import time

from rq.command import handle_stop_job_command
from rq.job import Job, JobStatus

from hearth.contract import (
    BLOCK_START,
    BLOCK_STOP,
    DELTA,
    ERROR,
    MESSAGE_END,
    STARTED,
    GenerationRequest,
    cancel_key,
    events_key,
)
from tests.conftest import MODEL, ScriptedEngine, read_log
from workers.scheduler import FLAG_READ_SECONDS

# The tool the scripted calls below name: a request that offers none gets no call.
BASH = [{"type": "function", "function": {"name": "Bash", "parameters": {
    "type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}}}]
ANSWER = ["<think>", "\nShort", " thought", ".\n</think>", "\n\nHello", " there", "!"]


def request(**changes):
    fields = dict(model=MODEL, requested_model="claude-sonnet-4-6", max_tokens=100,
                  messages=[{"role": "user", "content": "hello"}], enable_thinking=True)
    fields.update(changes)
    return GenerationRequest(**fields).to_dict()


def test_a_job_publishes_gapless_sequenced_events_and_returns_the_message(redis, jobs, make_worker):
    job_id = jobs.new_job_id()
    jobs.enqueue(job_id, request())
    make_worker(ScriptedEngine(ANSWER)).work(burst=True)

    events = read_log(redis, job_id)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    stream_ids = [entry_id for entry_id, _ in redis.xrange(events_key(job_id))]
    assert stream_ids == [f"0-{e.seq}".encode() for e in events]
    assert events[0].type == STARTED and events[-1].type == MESSAGE_END
    assert redis.ttl(events_key(job_id)) > 0

    job = Job.fetch(job_id, connection=redis)
    assert job.get_status() == JobStatus.FINISHED
    result = job.return_value()
    assert [b["type"] for b in result["content"]] == ["thinking", "text"]
    assert result["content"][0]["thinking"].strip() == "Short thought."
    assert result["content"][1]["text"] == "Hello there!"
    assert result["stop_reason"] == "end_turn" and result["model"] == "claude-sonnet-4-6"
    assert result["usage"]["output_tokens"] == len(ANSWER) + 1  # and the end token
    assert events[-1].data["usage"] == result["usage"]


def test_max_tokens_and_stop_sequences_set_the_stop_reason(redis, jobs, make_worker):
    capped, stopped = jobs.new_job_id(), jobs.new_job_id()
    jobs.enqueue(capped, request(max_tokens=3))
    jobs.enqueue(stopped, request(stop_sequences=[" there"]))
    make_worker(ScriptedEngine(ANSWER)).work(burst=True)

    capped_result = Job.fetch(capped, connection=redis).return_value()
    assert capped_result["stop_reason"] == "max_tokens" and capped_result["usage"]["output_tokens"] == 3
    stopped_result = Job.fetch(stopped, connection=redis).return_value()
    assert stopped_result["stop_reason"] == "stop_sequence" and stopped_result["stop_sequence"] == " there"
    assert stopped_result["content"][-1]["text"] == "Hello"


def test_tool_calls_end_the_turn_with_tool_use(redis, jobs, make_worker):
    call = ['<tool_call>\n{"name": "Bash", ', '"arguments": {"command": "ls"}}\n</tool_call>']
    job_id = jobs.new_job_id()
    jobs.enqueue(job_id, request(enable_thinking=False, tools=BASH))
    make_worker(ScriptedEngine(call)).work(burst=True)
    result = Job.fetch(job_id, connection=redis).return_value()
    assert result["stop_reason"] == "tool_use"
    assert result["content"][0]["type"] == "tool_use" and result["content"][0]["input"] == {"command": "ls"}


CUT_CALL = ['<tool_call>\n{"name": "Bash", ', '"arguments": {"command": "ls", "description": "Li', 'st"}}\n</tool_call>']


def test_a_call_cut_off_by_max_tokens_ends_as_a_tool_use_so_far_with_stop_reason_max_tokens(redis, jobs, make_worker):
    """Anthropic's shape for a message cut inside a tool_use block: no client runs the call as if whole."""
    job_id = jobs.new_job_id()
    jobs.enqueue(job_id, request(enable_thinking=False, max_tokens=2, tools=BASH))
    make_worker(ScriptedEngine(CUT_CALL)).work(burst=True)
    result = Job.fetch(job_id, connection=redis).return_value()
    assert result["stop_reason"] == "max_tokens" and result["usage"]["output_tokens"] == 2
    assert [(b["type"], b["name"], b["input"]) for b in result["content"]] == [("tool_use", "Bash", {"command": "ls"})]
    events = read_log(redis, job_id)
    streamed = [(e.type, e.data.get("block", e.data.get("delta", {})).get("type")) for e in events
                if e.type in (BLOCK_START, DELTA, BLOCK_STOP)]
    assert streamed == [(BLOCK_START, "tool_use"), (DELTA, "input_json_delta"), (BLOCK_STOP, None)]
    assert events[2].data["delta"]["partial_json"] == '{"command": "ls", "description": "Li'
    assert events[-1].type == MESSAGE_END and events[-1].data["stop_reason"] == "max_tokens"


def test_a_call_the_cap_cut_only_of_its_closing_tag_is_a_whole_call_with_stop_reason_tool_use(redis, jobs, make_worker):
    job_id = jobs.new_job_id()
    jobs.enqueue(job_id, request(enable_thinking=False, max_tokens=2, tools=BASH))
    make_worker(ScriptedEngine(['<tool_call>\n{"name": "Bash", ', '"arguments": {"command": "ls"}}\n',
                                "</tool_call>"])).work(burst=True)
    result = Job.fetch(job_id, connection=redis).return_value()
    assert result["stop_reason"] == "tool_use" and result["usage"]["output_tokens"] == 2
    assert [(b["type"], b["name"], b["input"]) for b in result["content"]] == [("tool_use", "Bash", {"command": "ls"})]


def test_a_call_cut_off_by_the_models_own_cap_is_not_reported_as_a_whole_call(redis, jobs, make_worker):
    job_id = jobs.new_job_id()
    jobs.enqueue(job_id, request(enable_thinking=False, max_tokens=64000, tools=BASH))
    engine = ScriptedEngine(CUT_CALL)
    engine.max_new_tokens = 2
    make_worker(engine).work(burst=True)
    result = Job.fetch(job_id, connection=redis).return_value()
    assert result["stop_reason"] == "max_tokens" and result["content"][0]["input"] == {"command": "ls"}


def test_cancel_of_a_running_job_stops_it_within_a_step(redis, jobs, make_worker):
    job_id = jobs.new_job_id()
    long_answer = ["word "] * 200
    cancels = []

    def cancel_at_step_five(key, i):
        if key == job_id and i == 5 and not cancels:
            cancels.append(jobs.cancel(job_id))

    jobs.enqueue(job_id, request(enable_thinking=False))
    # The worker reads the flags every FLAG_READ_SECONDS, not every step: scripted steps of a millisecond
    # or two let several through between two reads (once five), so these last longer than that.
    engine = ScriptedEngine(long_answer, on_step=cancel_at_step_five, delay=FLAG_READ_SECONDS * 1.5)
    worker = make_worker(engine)
    worker.work(burst=True)
    engine.delay = 0.0
    next_id = jobs.new_job_id()
    jobs.enqueue(next_id, request())
    worker.work(burst=True)

    assert cancels == ["started"]
    assert Job.fetch(job_id, connection=redis).get_status() == JobStatus.STOPPED
    events = read_log(redis, job_id)
    words = sum(e.data["delta"]["text"].count("word") for e in events if e.type == DELTA)
    assert 4 <= words <= 7, "generation went on after the cancel"
    assert events[-1].type == ERROR and events[-1].data["error"]["type"] == "cancelled"
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    # The worker went on to the next job, with the same engine.
    assert Job.fetch(next_id, connection=redis).get_status() == JobStatus.FINISHED


def test_rq_stop_job_command_stops_a_running_generation(redis, jobs, make_worker):
    job_id = jobs.new_job_id()
    holder = {}

    def stop_at_step_three(key, i):
        if i == 3 and engine.generated == 3:
            # What the worker's pub/sub thread does on `rq`'s send_stop_job_command.
            handle_stop_job_command(holder["worker"], {"command": "stop-job", "job_id": job_id})

    jobs.enqueue(job_id, request(enable_thinking=False))
    engine = ScriptedEngine(["tok "] * 100, on_step=stop_at_step_three)
    holder["worker"] = make_worker(engine)
    holder["worker"].work(burst=True)

    assert Job.fetch(job_id, connection=redis).get_status() == JobStatus.STOPPED
    assert engine.generated <= 5
    assert read_log(redis, job_id)[-1].data["error"]["type"] == "cancelled"


def test_a_cancelled_queued_job_never_runs(redis, jobs, make_worker):
    job_id = jobs.new_job_id()
    jobs.enqueue(job_id, request())
    assert jobs.cancel(job_id) == "queued"
    engine = ScriptedEngine(ANSWER)
    make_worker(engine).work(burst=True)
    assert engine.renders == 0
    assert Job.fetch(job_id, connection=redis).get_status() == JobStatus.CANCELED


def test_a_cancel_that_races_the_dequeue_still_stops_the_job(redis, jobs, make_worker):
    job_id = jobs.new_job_id()
    jobs.enqueue(job_id, request())
    # The API saw the job queued and set the flag, but the worker dequeued it first.
    redis.set(cancel_key(job_id), 1)
    engine = ScriptedEngine(ANSWER)
    make_worker(engine).work(burst=True)
    assert engine.generated == 0
    assert Job.fetch(job_id, connection=redis).get_status() == JobStatus.STOPPED


def test_a_failing_model_step_fails_its_jobs_with_an_error_and_the_next_job_runs(redis, jobs, make_worker):
    failing, healthy = jobs.new_job_id(), jobs.new_job_id()
    jobs.enqueue(failing, request())
    engine = ScriptedEngine(ANSWER, fail_at=2)
    worker = make_worker(engine)
    worker.work(burst=True)
    engine.fail_at = None
    jobs.enqueue(healthy, request())
    worker.work(burst=True)

    failed = Job.fetch(failing, connection=redis)
    assert failed.get_status() == JobStatus.FAILED
    error = read_log(redis, failing)[-1]
    assert error.type == ERROR and "MemoryError" in error.data["error"]["message"]
    assert Job.fetch(healthy, connection=redis).get_status() == JobStatus.FINISHED


def test_events_carry_anthropic_shaped_blocks(redis, jobs, make_worker):
    job_id = jobs.new_job_id()
    jobs.enqueue(job_id, request())
    make_worker(ScriptedEngine(ANSWER)).work(burst=True)
    events = read_log(redis, job_id)
    starts = [e.data["block"]["type"] for e in events if e.type == BLOCK_START]
    deltas = {e.data["delta"]["type"] for e in events if e.type == DELTA}
    assert starts == ["thinking", "text"]
    assert deltas == {"thinking_delta", "signature_delta", "text_delta"}


def test_a_spent_thinking_budget_closes_thinking_in_the_models_context(redis, jobs, make_worker):
    job_id = jobs.new_job_id()
    jobs.enqueue(job_id, request(thinking_budget=4))
    engine = ScriptedEngine(["<think>", "\nthink", " think", " think", " think", " think", " forever"],
                            then=["The", " answer", "."])
    make_worker(engine).work(burst=True)

    result = Job.fetch(job_id, connection=redis).return_value()
    assert [b["type"] for b in result["content"]] == ["thinking", "text"]
    assert result["content"][1]["text"] == "The answer."
    assert "forever" not in result["content"][0]["thinking"]
    # The continuation started from everything so far plus the closing tag, not from scratch.
    first, second = engine.contexts
    assert second[:len(first)] == first and second[-len("\n</think>\n\n"):] == engine.encode("\n</think>\n\n")
    assert result["stop_reason"] == "end_turn"


def test_an_end_of_turn_inside_thinking_closes_it_and_the_model_answers(redis, jobs, make_worker):
    """A reply of thinking alone shows nothing (`claude -p` prints an empty line)."""
    job_id = jobs.new_job_id()
    jobs.enqueue(job_id, request())
    engine = ScriptedEngine(["<think>", "\nA", " thought"], then=["The", " answer", "."])
    make_worker(engine).work(burst=True)

    result = Job.fetch(job_id, connection=redis).return_value()
    assert [b["type"] for b in result["content"]] == ["thinking", "text"], result["content"]
    assert result["content"][0]["thinking"] == "A thought" and result["content"][1]["text"] == "The answer."
    # It started again from everything so far plus the closing tag, its end of turn left out.
    first, second = engine.contexts
    closing = engine.encode("\n</think>\n\n")
    assert second == first + [ScriptedEngine.FIRST_TOKEN + i for i in range(3)] + closing
    assert result["stop_reason"] == "end_turn" and result["usage"]["output_tokens"] == 3 + 3 + 1


def test_a_cold_shutdown_mid_job_still_sends_an_error_event(redis, jobs, make_worker):
    job_id = jobs.new_job_id()
    jobs.enqueue(job_id, request())

    def shut_down(key, i):
        if i == 2:
            raise SystemExit()

    try:
        make_worker(ScriptedEngine(ANSWER, on_step=shut_down)).work(burst=True)
    except SystemExit:
        pass
    last = read_log(redis, job_id)[-1]
    assert last.type == ERROR and "shut down" in last.data["error"]["message"]


def test_the_models_own_cap_ends_the_turn_rather_than_reporting_max_tokens(redis, jobs, make_worker):
    job_id = jobs.new_job_id()
    jobs.enqueue(job_id, request(enable_thinking=False, max_tokens=64000))
    engine = ScriptedEngine(["a", "b", "c", "d"])
    engine.max_new_tokens = 3  # generation_config.json's max_new_tokens
    make_worker(engine).work(burst=True)
    result = Job.fetch(job_id, connection=redis).return_value()
    assert result["stop_reason"] == "end_turn" and result["usage"]["output_tokens"] == 3
    assert result["content"][0]["text"] == "abc"


def test_under_the_models_own_cap_thinking_leaves_room_for_an_answer(redis, jobs, make_worker):
    """A model that would think past its generation_config.json cap still answers (no budget asked)."""
    job_id = jobs.new_job_id()
    jobs.enqueue(job_id, request(max_tokens=64000))
    engine = ScriptedEngine(["<think>"] + [" think"] * 20, then=["The", " answer", "."])
    engine.max_new_tokens = 8
    make_worker(engine).work(burst=True)
    result = Job.fetch(job_id, connection=redis).return_value()
    assert [b["type"] for b in result["content"]] == ["thinking", "text"], result["content"]
    assert result["content"][0]["thinking"].split() == ["think"] * 6  # three quarters of 8
    assert result["content"][1]["text"] == "The"  # the room left after "<think>" and six thinking tokens
    assert result["stop_reason"] == "end_turn" and result["usage"]["output_tokens"] == 8


def test_answers_stop_at_the_context_window_and_a_prompt_that_fills_it_is_a_bad_request(redis, jobs, make_worker):
    engine = ScriptedEngine(["word "] * 50)
    engine.context_window = 4 + 5  # the test prompt is 4 tokens
    fits, overflows = jobs.new_job_id(), jobs.new_job_id()
    jobs.enqueue(fits, request(enable_thinking=False, max_tokens=32_000))
    make_worker(engine).work(burst=True)
    result = Job.fetch(fits, connection=redis).return_value()
    assert result["stop_reason"] == "max_tokens" and result["usage"]["output_tokens"] == 5

    engine.context_window = 4
    jobs.enqueue(overflows, request(enable_thinking=False))
    make_worker(engine).work(burst=True)
    assert Job.fetch(overflows, connection=redis).get_status() == JobStatus.FAILED
    [event] = read_log(redis, overflows)
    assert event.type == ERROR and event.data["error"]["type"] == "invalid_request_error"
    assert "context window is 4" in event.data["error"]["message"]


def test_a_stopping_worker_does_not_wait_out_its_command_listeners_poll(make_worker):
    """rq unsubscribes, then joins its pub/sub thread (redis-py 8.2 without a limit). A thread that
    read the unsubscribe reply first waits one poll for a new subscription: the stop waits that long."""
    worker = make_worker(ScriptedEngine(ANSWER))
    worker.subscribe()
    worker.pubsub.unsubscribe()
    deadline = time.monotonic() + 5
    while worker.pubsub.subscribed and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)  # the listener is back in get_message, waiting for a subscription
    stopping = threading.Thread(target=worker.unsubscribe, daemon=True)
    stopping.start()
    stopping.join(10)  # rq's own poll is 60 s
    assert not stopping.is_alive()


def test_a_worker_stopping_with_redis_gone_says_so_in_a_line(fake_server, make_worker, caplog):
    worker = make_worker(ScriptedEngine(ANSWER))
    worker.register_birth()
    fake_server.connected = False  # the user's Redis stopped first
    with caplog.at_level("WARNING", logger="workers.worker"):
        worker.teardown()
    assert "stopped without reaching Redis" in caplog.text
