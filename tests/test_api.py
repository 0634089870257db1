"""The HTTP edge in-process: Starlette app on fakeredis, a worker thread draining the queue."""

import json
import re

import anthropic
import anyio
import fakeredis
import pytest
from rq.job import Job, JobStatus
from starlette.testclient import TestClient

from api.app import create_app
from api.job_queue import JobQueue
from api.live_hub import LiveHub
from hearth.contract import cancel_key, model_queue, worker_heartbeat_key
from tests.conftest import MODEL, ScriptedEngine, sse_events

INTERACTIVE_KEY = f"rq:queue:{model_queue('interactive', MODEL)}"

ANSWER = ["<think>", "\nHmm", ".\n</think>", "\n\nHello", " from", " Hearth", "."]


def body(**changes):
    request = {"model": "claude-sonnet-4-6", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}],
               "thinking": {"type": "enabled", "budget_tokens": 100}}
    request.update(changes)
    return request


def test_streamed_message_follows_anthropic_event_order(client, running_worker):
    running_worker(ScriptedEngine(ANSWER))
    with client.stream("POST", "/v1/messages?beta=true", json=body(stream=True),
                       headers={"anthropic-beta": "interleaved-thinking-2025-05-14"}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response.read().decode())
    # Anthropic's grammar: message_start (block_start delta+ block_stop)+ message_delta message_stop
    order = " ".join(name for name, _ in events if name != "ping")
    blocks = "(content_block_start( content_block_delta)+ content_block_stop )"
    assert re.fullmatch(f"message_start {blocks}{{2}}message_delta message_stop", order), order
    starts = [data["content_block"]["type"] for name, data in events if name == "content_block_start"]
    assert starts == ["thinking", "text"]
    message_delta = dict(events)["message_delta"]
    assert message_delta["delta"]["stop_reason"] == "end_turn"
    assert message_delta["usage"]["output_tokens"] == len(ANSWER) + 1  # and the end token


def test_anthropic_sdk_stream_helper_accumulates_the_message(client, running_worker):
    running_worker(ScriptedEngine(ANSWER))
    sdk = anthropic.Anthropic(base_url=str(client.base_url), api_key="unused", http_client=client, max_retries=0)
    with sdk.messages.stream(**body()) as stream:
        text = "".join(stream.text_stream)
        message = stream.get_final_message()
    assert text == "Hello from Hearth."
    assert [b.type for b in message.content] == ["thinking", "text"]
    assert message.content[0].thinking.strip() == "Hmm." and message.content[0].signature
    assert message.usage.input_tokens > 0 and message.usage.output_tokens == len(ANSWER) + 1  # and the end token
    assert message.model == "claude-sonnet-4-6" and message.stop_reason == "end_turn"


def test_non_streamed_message_has_the_same_shape(client, running_worker):
    running_worker(ScriptedEngine(ANSWER))
    sdk = anthropic.Anthropic(base_url=str(client.base_url), api_key="unused", http_client=client, max_retries=0)
    message = sdk.messages.create(**body())
    assert message.id.startswith("msg_")
    assert [b.type for b in message.content] == ["thinking", "text"]
    assert message.content[1].text == "Hello from Hearth."
    assert message.usage.output_tokens == len(ANSWER) + 1  # and the end token


def test_failed_job_becomes_an_error_event_in_the_stream(client, running_worker):
    running_worker(ScriptedEngine(ANSWER, fail_at=3))
    with client.stream("POST", "/v1/messages", json=body(stream=True)) as response:
        events = sse_events(response.read().decode())
    assert events[-1][0] == "error"
    assert events[-1][1]["error"]["type"] == "api_error"
    assert "MemoryError" in events[-1][1]["error"]["message"]


def test_failed_non_streamed_job_is_a_500_with_error_json(client, running_worker):
    running_worker(ScriptedEngine(ANSWER, fail_at=0))
    response = client.post("/v1/messages", json=body())
    assert response.status_code == 500
    assert response.json()["type"] == "error" and "MemoryError" in response.json()["error"]["message"]


def test_stream_reports_a_dead_worker_instead_of_hanging(client, redis, jobs):
    # A worker took the job and then vanished: its heartbeat key is gone.
    with client.stream("POST", "/v1/messages", json=body(stream=True)) as response:
        lines = response.iter_lines()
        assert "message_start" in next(lines)
        job_id = Job.fetch(redis.lrange(INTERACTIVE_KEY, 0, -1)[0].decode(), connection=redis).id
        job = Job.fetch(job_id, connection=redis)
        job.set_status(JobStatus.STARTED)
        job.worker_name = "ghost"
        job.save()
        events = sse_events("\n".join(lines))
    assert events[-1][0] == "error" and "stopped responding" in events[-1][1]["error"]["message"]
    assert not redis.exists(worker_heartbeat_key("ghost"))


@pytest.mark.parametrize("payload, status, error_type", [
    (b"{not json", 400, "invalid_request_error"),
    (b"\xff\xfe", 400, "invalid_request_error"),
    (json.dumps({"model": "m", "messages": []}).encode(), 400, "invalid_request_error"),
    (json.dumps(body(messages=[{"role": "wizard", "content": "hi"}])).encode(), 400, "invalid_request_error"),
])
def test_bad_input_gets_anthropic_error_json(client, payload, status, error_type):
    response = client.post("/v1/messages", content=payload, headers={"content-type": "application/json"})
    assert response.status_code == status
    assert response.json() == {"type": "error", "error": {"type": error_type, "message": response.json()["error"]["message"]}}
    assert response.json()["error"]["message"]


def test_oversized_body_is_413(fake_server, settings):
    small = create_app(settings.__class__(**{**settings.__dict__, "max_body_bytes": 1000}),
                       clients=lambda s: (fakeredis.FakeRedis(server=fake_server), fakeredis.FakeAsyncRedis(server=fake_server)))
    with TestClient(small) as test_client:
        response = test_client.post("/v1/messages", json=body(messages=[{"role": "user", "content": "x" * 2000}]))
    assert response.status_code == 413 and response.json()["error"]["type"] == "request_too_large"


def test_unknown_route_and_wrong_method_are_error_json(client):
    assert client.get("/v1/nowhere").json()["error"]["type"] == "not_found_error"
    response = client.get("/v1/messages")
    assert response.status_code == 405 and response.json()["type"] == "error"


def test_models_lists_what_is_served(client, settings):
    models = client.get("/v1/models").json()
    assert [m["id"] for m in models["data"]] == [settings.model]


def test_healthz_needs_a_live_worker(client, redis):
    response = client.get("/healthz")
    assert response.status_code == 503 and response.json()["redis"] is True and "worker" in response.json()["error"]
    redis.set(worker_heartbeat_key("w1"), "{}", ex=5)
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json()["workers"] == ["w1"]


def test_redis_down_is_a_503_with_error_json(settings):
    down = settings.__class__(**{**settings.__dict__, "redis_url": "redis://127.0.0.1:1/0"})
    with TestClient(create_app(down)) as test_client:
        response = test_client.post("/v1/messages", json=body())
        health = test_client.get("/healthz")
    assert response.status_code == 503 and response.json()["type"] == "error"
    assert health.status_code == 503 and health.json()["redis"] is False


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.mark.anyio
async def test_client_disconnect_cancels_its_job(app, fake_server, settings):
    """Drive the ASGI app directly: the client disconnects after message_start."""
    app.state.redis = fakeredis.FakeAsyncRedis(server=fake_server)
    sync = fakeredis.FakeRedis(server=fake_server)
    app.state.jobs = JobQueue(sync, settings)
    app.state.hub = LiveHub(app.state.redis)
    disconnect = anyio.Event()
    sent = []
    request_body = json.dumps(body(stream=True)).encode()
    messages = [{"type": "http.request", "body": request_body, "more_body": False}]

    async def receive():
        if messages:
            return messages.pop(0)
        await disconnect.wait()
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)
        if message["type"] == "http.response.body" and b"message_start" in message.get("body", b""):
            disconnect.set()

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": "/v1/messages", "raw_path": b"/v1/messages", "query_string": b"",
             "root_path": "", "headers": [(b"content-type", b"application/json")],
             "client": ("127.0.0.1", 1), "server": ("testserver", 80), "state": {}}
    with anyio.fail_after(10):
        await app(scope, receive, send)
    job_id = sync.lrange(INTERACTIVE_KEY, 0, -1)
    assert job_id == [], "a job cancelled while queued must leave the queue"
    cancelled = [k for k in sync.scan_iter("hearth:cancel:*")]
    assert len(cancelled) == 1
    job = Job.fetch(cancelled[0].decode().rsplit(":", 1)[1], connection=sync)
    assert job.get_status() == JobStatus.CANCELED
    assert sync.exists(cancel_key(job.id))


def test_openai_sdk_streams_reasoning_and_text(client, running_worker):
    import openai

    running_worker(ScriptedEngine(ANSWER))
    sdk = openai.OpenAI(base_url=str(client.base_url) + "/v1", api_key="unused", http_client=client, max_retries=0)
    chunks = list(sdk.chat.completions.create(model="test-model", messages=[{"role": "user", "content": "hi"}],
                                              stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    reasoning = "".join(getattr(c.choices[0].delta, "reasoning_content", None) or "" for c in chunks if c.choices)
    assert text == "Hello from Hearth." and reasoning.strip() == "Hmm."
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage.completion_tokens == len(ANSWER) + 1  # and the end token


def test_openai_sdk_tool_calls_stream_and_accumulate(client, running_worker):
    import openai

    call = ['<tool_call>\n{"name": "Bash", ', '"arguments": {"command": "ls"}}\n</tool_call>']
    running_worker(ScriptedEngine(call))
    sdk = openai.OpenAI(base_url=str(client.base_url) + "/v1", api_key="unused", http_client=client, max_retries=0)
    tools = [{"type": "function", "function": {"name": "Bash", "parameters": {"type": "object"}}}]
    with sdk.chat.completions.stream(model="test-model", messages=[{"role": "user", "content": "list"}], tools=tools) as stream:
        for _ in stream:
            pass
        completion = stream.get_final_completion()
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls[0].function.name == "Bash"
    assert json.loads(choice.message.tool_calls[0].function.arguments) == {"command": "ls"}

    message = sdk.chat.completions.create(model="test-model", messages=[{"role": "user", "content": "list"}], tools=tools)
    assert message.choices[0].message.tool_calls[0].id.startswith("toolu_")
    assert message.usage.prompt_tokens > 0 and message.usage.prompt_tokens_details.cached_tokens == 0


def test_openai_bad_input_is_a_400(client):
    response = client.post("/v1/chat/completions", json={"model": "m", "messages": [{"role": "wizard"}]})
    assert response.status_code == 400 and "role" in response.json()["error"]["message"]


def test_count_tokens_equals_the_input_tokens_of_the_same_request(client, running_worker):
    running_worker(ScriptedEngine(ANSWER))
    sdk = anthropic.Anthropic(base_url=str(client.base_url), api_key="unused", http_client=client, max_retries=0)
    request = dict(body(), messages=[{"role": "user", "content": "a longer question about many things " * 5}])
    counted = sdk.messages.count_tokens(model=request["model"], messages=request["messages"]).input_tokens
    message = sdk.messages.create(**request)
    assert counted == message.usage.input_tokens + message.usage.cache_read_input_tokens
    assert counted > 10


def test_models_lists_aliases(fake_server, settings, tmp_path):
    (tmp_path / "aliases.json").write_text(json.dumps({"qwen-coder": settings.model}))
    aliased = settings.__class__(**{**settings.__dict__, "aliases_file": str(tmp_path / "aliases.json")})
    app = create_app(aliased, clients=lambda s: (fakeredis.FakeRedis(server=fake_server),
                                                 fakeredis.FakeAsyncRedis(server=fake_server)))
    with TestClient(app) as test_client:
        ids = [m["id"] for m in test_client.get("/v1/models").json()["data"]]
    assert ids == [settings.model, "qwen-coder"]


def test_an_identical_request_attaches_to_the_running_job(client, redis, running_worker):
    running_worker(ScriptedEngine(["word "] * 60, delay=0.02))
    request = body(stream=True, max_tokens=100)
    with client.stream("POST", "/v1/messages", json=request) as first:
        first_lines = first.iter_lines()
        first_id = json.loads(next(line for line in first_lines if line.startswith("data:"))[5:])["message"]["id"]
        # Claude Code re-sends after its own timeout: same body (a fresh billing nonce would not matter).
        second = client.post("/v1/messages", json=dict(request, stream=False))
        rest = "\n".join(first_lines)
    assert second.status_code == 200 and second.json()["id"] == first_id
    assert len(redis.keys("rq:job:*")) == 1, "the duplicate was enqueued a second time"
    assert sse_events(rest)[-1][0] == "message_stop"
    assert second.json()["content"][0]["text"] == "word " * 59 + "word "


def test_a_different_api_key_is_a_different_request(client, redis, running_worker):
    running_worker(ScriptedEngine(["word "] * 30, delay=0.02))
    request = body(stream=True)
    with client.stream("POST", "/v1/messages", json=request, headers={"x-api-key": "alice"}) as first:
        next(first.iter_lines())
        second = client.post("/v1/messages", json=dict(request, stream=False), headers={"x-api-key": "bob"})
    assert second.status_code == 200
    assert len(redis.keys("rq:job:*")) == 2


def test_a_non_streamed_request_past_its_timeout_is_cancelled_with_a_504(fake_server, settings, running_worker):
    quick = settings.__class__(**{**settings.__dict__, "request_timeout": 0.5})
    app = create_app(quick, clients=lambda s: (fakeredis.FakeRedis(server=fake_server),
                                               fakeredis.FakeAsyncRedis(server=fake_server)))
    running_worker(ScriptedEngine(["word "] * 500, delay=0.01))
    with TestClient(app) as test_client:
        response = test_client.post("/v1/messages", json=body(max_tokens=1000))
    assert response.status_code == 504 and "/v1/jobs" in response.json()["error"]["message"]
    sync = fakeredis.FakeRedis(server=fake_server)
    assert len(list(sync.scan_iter("hearth:cancel:*"))) == 1


@pytest.mark.anyio
async def test_a_feed_misses_nothing_when_the_hub_loses_its_connection(fake_server, monkeypatch):
    from api import live_hub
    from api.feed import JobFeed
    from hearth.contract import ERROR
    from workers.publisher import EventPublisher

    monkeypatch.setattr(live_hub, "RECONNECT_DELAYS", (0.01,))
    redis = fakeredis.FakeAsyncRedis(server=fake_server)
    hub = LiveHub(redis)
    publisher = EventPublisher(fakeredis.FakeRedis(server=fake_server), "job1", ttl=60)
    async with JobFeed(redis, hub, "job1", idle_after=5) as feed:
        original = hub._pubsub.get_message
        calls = {"n": 0}

        async def drop_once(**kwargs):
            calls["n"] += 1
            if calls["n"] == 1:
                publisher.publish("delta", {"i": 1})  # published while the connection is down
                from redis.exceptions import ConnectionError
                raise ConnectionError("Redis restarted")
            return await original(**kwargs)

        hub._pubsub.get_message = drop_once
        seen = []
        with anyio.fail_after(3):  # well inside the quiet tick: the hub's RESYNC sent the feed to the log
            async for event in feed.events():
                if event is not None:
                    seen.append(event)
                    if event.seq == 1:  # recovered from the log: now end the job, live
                        publisher.publish(ERROR, {"error": {"type": "api_error", "message": "end"}})
    await hub.close()
    assert [e.seq for e in seen] == [1, 2]


@pytest.mark.anyio
async def test_many_feeds_share_one_connection_and_each_gets_its_own_events(fake_server):
    from api.feed import JobFeed
    from hearth.contract import ERROR
    from workers.publisher import EventPublisher

    redis = fakeredis.FakeAsyncRedis(server=fake_server)
    hub = LiveHub(redis)
    feeds = [JobFeed(redis, hub, f"job{i % 3}", idle_after=5) for i in range(6)]  # two feeds per job
    for feed in feeds:
        await feed.__aenter__()
    for i in range(3):
        publisher = EventPublisher(fakeredis.FakeRedis(server=fake_server), f"job{i}", ttl=60)
        publisher.publish("delta", {"job": i})
        publisher.publish(ERROR, {"error": {"type": "api_error", "message": "end"}})

    async def collect(feed):
        return [(e.type, e.data) async for e in feed.events() if e is not None]

    with anyio.fail_after(3):
        results = [await collect(feed) for feed in feeds]
    for i, events in enumerate(results):
        assert events[0] == ("delta", {"job": i % 3}) and events[-1][0] == ERROR
    assert hub.listening("hearth:live:job0") == 2
    for feed in feeds:
        await feed.__aexit__(None, None, None)
    assert hub.listening("hearth:live:job0") == 0
    await hub.close()


def test_cache_counters_are_shown_for_live_workers_only(client, redis):
    redis.set("hearth:cache-stats:alive", json.dumps({"m": {"reused_tokens": 5}}))
    redis.set("hearth:cache-stats:gone", json.dumps({"m": {"reused_tokens": 9}}))
    redis.set(worker_heartbeat_key("alive"), "{}", ex=5)
    redis.hset("hearth:affinity:alive", mapping={"a1b2": 300, "c3d4": 900})
    assert client.get("/v1/cache").json() == {"workers": {"alive": {"m": {"reused_tokens": 5}}},
                                             "held_prefixes": {"alive": 2}}
