"""Property-based fuzzing of the API: whatever arrives, the answer is a 2xx or a 4xx with Anthropic's
error JSON, never a 5xx, and the worker keeps serving.

Three families of bodies: arbitrary JSON, a valid Claude Code-shaped request
with one field replaced by arbitrary JSON, and raw bytes. A worker with a
scripted engine answers whatever is valid.
"""

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
import pytest

from tests.conftest import ScriptedEngine

ENDPOINTS = ["/v1/messages", "/v1/messages/count_tokens", "/v1/chat/completions", "/v1/jobs"]
FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)

# Values of the shapes the API expects, so that replacing a field often still gives a valid request.
plausible_values = st.sampled_from([
    "hi", "", "user", "assistant", "system", "claude-haiku-4-5", 0, 1, 8, -1, 1.5, 2**31, True, None, [], {},
    [{"type": "text", "text": "x"}], [{"type": "image", "source": {"type": "base64", "data": ""}}],
    {"type": "enabled", "budget_tokens": 1024}, {"type": "disabled"}, {"type": "adaptive"}, {"type": "any"},
    {"type": "tool", "name": "Bash"}, {"type": "object"}, {"role": "user", "content": "hi"},
])

VALID = {
    "model": "claude-sonnet-4-6", "max_tokens": 8, "stream": False,
    "system": [{"type": "text", "text": "You are terse."}],
    "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]},
                 {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "Bash",
                                                    "input": {"command": "ls"}}]},
                 {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "a.txt"}]}],
    "tools": [{"name": "Bash", "description": "run", "input_schema": {"type": "object",
                                                                       "properties": {"command": {"type": "string"}}}}],
    "thinking": {"type": "enabled", "budget_tokens": 1024},
    "temperature": 0.5, "stop_sequences": ["STOP"], "tool_choice": {"type": "auto"},
}
FIELDS = sorted(VALID) + ["messages.0.role", "messages.0.content", "messages.0.content.0.type",
                          "messages.1.content.0.input", "messages.2.content.0.content", "tools.0.input_schema",
                          "system.0.text", "thinking.budget_tokens", "messages.0"]


@pytest.fixture
def serving(client, running_worker):
    running_worker(ScriptedEngine(["Hi", " there"]))
    return client


def replaced(body: dict, path: str, value):
    body = json.loads(json.dumps(body))
    *parents, last = path.split(".")
    target = body
    for part in parents:
        target = target[int(part)] if isinstance(target, list) else target[part]
    if isinstance(target, list):
        target[int(last)] = value
    else:
        target[last] = value
    return body


def post(client, endpoint: str, payload: bytes):
    response = client.post(endpoint, content=payload, headers={"content-type": "application/json"})
    assert response.status_code < 500, (endpoint, payload[:300], response.text[:300])
    if response.status_code >= 400:
        error = response.json()
        assert error["type"] == "error" and isinstance(error["error"]["message"], str), error
        assert error["error"]["type"].endswith("_error"), error
    return response


def wrapped(endpoint: str, body):
    return {"request": body} if endpoint == "/v1/jobs" else body


@FUZZ
@given(body=json_values, endpoint=st.sampled_from(ENDPOINTS))
def test_arbitrary_json_bodies(serving, body, endpoint):
    post(serving, endpoint, json.dumps(body).encode())


@FUZZ
@given(field=st.sampled_from(FIELDS), value=plausible_values | json_values, endpoint=st.sampled_from(ENDPOINTS))
def test_a_valid_request_with_one_field_replaced(serving, field, value, endpoint):
    body = replaced(VALID, field, value)
    if endpoint == "/v1/chat/completions":
        body = {k: body[k] for k in ("model", "max_tokens", "stream", "temperature") if k in body}
        body["messages"] = [{"role": "user", "content": value}]
    post(serving, endpoint, json.dumps(wrapped(endpoint, body)).encode())


@FUZZ
@given(payload=st.binary(max_size=200), endpoint=st.sampled_from(ENDPOINTS))
def test_raw_bytes(serving, payload, endpoint):
    post(serving, endpoint, payload)


def test_deeply_nested_json_and_the_worker_still_serves(serving):
    for depth in (1_000, 100_000):
        nested = b"[" * depth + b"]" * depth
        assert post(serving, "/v1/messages", nested).status_code == 400
        deep_content = json.dumps(replaced(VALID, "messages.0.content", [])).replace("[]", "[" * 500 + "]" * 500)
        post(serving, "/v1/messages", deep_content.encode())
    assert post(serving, "/v1/messages", json.dumps(VALID).encode()).status_code == 200
