"""A non-streamed request waits as long as its client does, and no longer.

The app is driven through its ASGI interface with a fake `receive` that
behaves like gunicorn 27's: once the body is read it blocks until the client
goes, and a wait cut short by a cancellation leaves it answering
`http.disconnect` for good (which is how polling `is_disconnected()` took
waiting clients for gone ones).
"""

import json
import time

import anyio
import pytest
from rq.job import Job, JobStatus

from api.disconnect import unless_disconnected
from tests.conftest import ScriptedEngine

PIECES = [f"word{i} " for i in range(40)]


class GunicornLikeReceive:
    """The body in one message, then `http.disconnect` only when `leave()` is called (or after a
    cancelled wait, as gunicorn 27's body receiver does)."""

    def __init__(self, body: dict):
        self._body = json.dumps(body).encode()
        self._sent = False
        self._closed = False
        self._gone = anyio.Event()

    async def __call__(self):
        if not self._sent:
            self._sent = True
            return {"type": "http.request", "body": self._body, "more_body": False}
        if self._closed:
            return {"type": "http.disconnect"}
        try:
            await self._gone.wait()
        finally:
            self._closed = True
        return {"type": "http.disconnect"}

    def leave(self):
        self._gone.set()


async def post(app, path: str, receive) -> tuple[int, dict]:
    sent = []

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(b"content-type", b"application/json")], "client": ("127.0.0.1", 1),
             "server": ("127.0.0.1", 80), "state": {}}
    await app(scope, receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    payload = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, json.loads(payload or b"null")


MESSAGES = ("/v1/messages", {"model": "claude-sonnet-4-6", "max_tokens": 100,
                             "messages": [{"role": "user", "content": "hi"}]})
CHAT = ("/v1/chat/completions", {"model": "claude-sonnet-4-6", "max_tokens": 100,
                                 "messages": [{"role": "user", "content": "hi"}]})


@pytest.mark.parametrize("path, body", [MESSAGES, CHAT], ids=["messages", "chat"])
def test_a_client_that_waits_through_many_quiet_ticks_gets_its_answer(client, running_worker, path, body):
    # ping_interval is 0.2 s: a silent second before the first token (a long prefill, a queue) is five quiet ticks.
    running_worker(ScriptedEngine(PIECES, on_step=lambda key, i: time.sleep(1.0) if i == 0 else None))
    status, answer = client.portal.call(post, client.app, path, GunicornLikeReceive(body))
    assert status == 200, answer
    text = answer["content"][0]["text"] if "content" in answer else answer["choices"][0]["message"]["content"]
    assert text == "".join(PIECES)


@pytest.mark.parametrize("path, body", [MESSAGES, CHAT], ids=["messages", "chat"])
def test_a_client_that_leaves_mid_wait_has_its_job_cancelled(client, redis, running_worker, path, body):
    running_worker(ScriptedEngine(["word "] * 100_000, delay=0.01))
    receive = GunicornLikeReceive(body)

    async def leave_after_a_while():
        response = {}

        async def request():
            response["sent"] = await post(client.app, path, receive)

        async with anyio.create_task_group() as group:
            group.start_soon(request)
            await anyio.sleep(0.6)
            receive.leave()
        return response["sent"]

    status, _ = client.portal.call(leave_after_a_while)
    assert status == 499
    [key] = redis.keys("hearth:cancel:*")
    job = Job.fetch(key.decode().rsplit(":", 1)[1], connection=redis)
    deadline = time.monotonic() + 5
    while job.get_status() != JobStatus.STOPPED and time.monotonic() < deadline:
        time.sleep(0.05)
    assert job.get_status() == JobStatus.STOPPED


def test_work_that_fails_raises_its_own_exception():
    async def failing():
        raise LookupError("no such job")

    async def main():
        async def never_leaves():
            await anyio.sleep_forever()

        await unless_disconnected(never_leaves, failing)

    with pytest.raises(LookupError, match="no such job"):
        anyio.run(main)


def test_work_is_cancelled_when_the_client_goes_first():
    finished = []

    async def slow():
        await anyio.sleep(10)
        finished.append(True)

    async def leaves_at_once():
        return {"type": "http.disconnect"}

    async def main():
        with anyio.fail_after(2):
            return await unless_disconnected(leaves_at_once, slow)

    assert anyio.run(main) is None and not finished
