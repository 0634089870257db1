import pytest

from api.anthropic_request import IMAGE_PLACEHOLDER, decode_json_body, parse_messages_request
from api.errors import InvalidRequest, NotFound
from api.live_workers import LiveWorker, LiveWorkers
from api.models import ModelRouter
from hearth.settings import Settings
from tests.claude_code_request import claude_code_request

ROUTER = ModelRouter(Settings(model="main-model", fast_model="fast-model"))


def parse(body):
    return parse_messages_request(body, ROUTER)


def test_claude_code_request_is_accepted_and_normalized():
    request, stream = parse(claude_code_request())
    assert stream is True
    assert request.model == "main-model"
    assert request.requested_model == "claude-sonnet-4-5-20250929"
    assert request.enable_thinking is True and request.thinking_budget is None
    # The billing header (a per-request nonce) is gone; the rest of the system prompt stays.
    assert "billing" not in request.system
    assert request.system.startswith("You are Claude Code")
    roles = [m["role"] for m in request.messages]
    assert roles == ["user", "system", "assistant", "tool", "tool", "user"]
    assert request.messages[1]["content"] == "The user switched to plan mode."
    assistant = request.messages[2]
    assert assistant["content"] == "Listing."
    assert assistant["reasoning_content"] == "I should list files."
    assert assistant["tool_calls"][0]["function"] == {"name": "Bash", "arguments": {"command": "ls"}}
    assert request.messages[3] == {"role": "tool", "tool_call_id": "toolu_01", "content": "README.md\n" + IMAGE_PLACEHOLDER}
    assert request.messages[4]["content"] == "Error: no such file"
    # Server tools have no input_schema and run at Anthropic: dropped.
    assert [t["function"]["name"] for t in request.tools] == ["Bash"]


def test_claude_code_2_1_332s_request_is_accepted():
    """The newest release's shape (captured 2026-11-30): 128K max_tokens, thinking display omitted,
    a deferred-tool placeholder, a new model name."""
    tools = claude_code_request()["tools"] + [
        {"name": "DeferredToolPlaceholder", "description": "Reserved placeholder that keeps deferred tool loading "
         "active; never call this tool.", "input_schema": {"type": "object", "properties": {}}, "defer_loading": True}]
    body = claude_code_request(model="claude-opus-5-5", max_tokens=128000, tools=tools,
                               thinking={"type": "adaptive", "display": "omitted"})
    request, _ = parse(body)
    assert request.max_tokens == 128000 and request.model == "main-model"
    assert request.enable_thinking and request.thinking_display == "omitted"
    # A deferred tool is loaded later by tool search, if at all: not shown to the model.
    assert [t["function"]["name"] for t in request.tools] == ["Bash"]


def test_the_newest_sdks_request_fields_are_accepted():
    """anthropic 2.16's `messages.create` sends these (and no longer `temperature`, `top_p` or `top_k`):
    none changes what a local model generates, so each is accepted and ignored."""
    body = claude_code_request(cache_control={"type": "ephemeral"}, container=None, diagnostics=None,
                               inference_geo="us", service_tier="auto", speed="fast", user_profile_id="profile_1",
                               workspace_id="wrkspc_1")
    request, _ = parse(body)
    assert request == parse(claude_code_request())[0]


@pytest.mark.parametrize("model, served", [
    ("claude-haiku-4-5-20251001", "fast-model"),
    ("claude-3-5-haiku-latest", "fast-model"),
    ("claude-opus-4-1", "main-model"),
    ("fast-model", "fast-model"),
    ("/models/fast-model", "fast-model"),  # a path names a model by its directory's name
])
def test_model_routing(model, served):
    request, _ = parse(claude_code_request(model=model))
    assert request.model == served and request.requested_model == model


def test_a_model_nobody_serves_is_a_404_at_once():
    with pytest.raises(NotFound, match="gpt-4o"):
        parse(claude_code_request(model="gpt-4o"))


def test_models_resolve_to_what_live_workers_announce():
    live = LiveWorkers()
    live.workers = {
        "mac-a": LiveWorker("mac-a", {"Qwen3-8B-4bit": "/Users/a/models/Qwen3-8B-4bit"}, slots=8),
        "mac-b": LiveWorker("mac-b", {"mlx-community/Qwen3-Coder-30B-A3B-4bit": "mlx-community/Qwen3-Coder-30B-A3B-4bit"},
                            slots=4),
    }
    router = ModelRouter(Settings(model="/here/models/Qwen3-8B-4bit"), live)
    # Served by a live worker, by key or id; the API's own path for its main model finds the same key.
    assert router.resolve("mlx-community/Qwen3-Coder-30B-A3B-4bit") == "mlx-community/Qwen3-Coder-30B-A3B-4bit"
    assert router.resolve("Qwen3-8B-4bit") == "Qwen3-8B-4bit"
    assert router.resolve("claude-opus-4-6") == "Qwen3-8B-4bit"
    assert set(router.served) == {"Qwen3-8B-4bit", "mlx-community/Qwen3-Coder-30B-A3B-4bit"}
    with pytest.raises(NotFound):
        router.resolve("other-org/Qwen3-Coder-30B-A3B-4bit")  # two hub ids must match exactly


@pytest.mark.parametrize("thinking, expected", [
    (None, (False, None)),
    ({"type": "disabled"}, (False, None)),
    ({"type": "enabled", "budget_tokens": 1024}, (True, 1024)),
    ({"type": "adaptive"}, (True, None)),
])
def test_thinking_modes(thinking, expected):
    body = claude_code_request()
    if thinking is None:
        del body["thinking"]
    else:
        body["thinking"] = thinking
    request, _ = parse(body)
    assert (request.enable_thinking, request.thinking_budget) == expected


def test_sampling_and_stop_options():
    request, stream = parse(claude_code_request(stream=False, temperature=0, top_p=0.9, top_k=20,
                                                stop_sequences=["###"], system="plain string"))
    assert (request.temperature, request.top_p, request.top_k) == (0.0, 0.9, 20)
    assert request.stop_sequences == ["###"] and request.system == "plain string" and stream is False


@pytest.mark.parametrize("change, message", [
    ({"model": None}, "model"),
    ({"model": 5}, "model"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": "10"}, "max_tokens"),
    ({"max_tokens": True}, "max_tokens"),
    ({"messages": []}, "messages"),
    ({"messages": "hi"}, "messages"),
    ({"messages": [{"role": "robot", "content": "hi"}]}, "role"),
    ({"messages": [{"role": "user"}]}, "content"),
    ({"messages": [{"role": "user", "content": 5}]}, "content"),
    ({"messages": [{"role": "user", "content": [{"text": "no type"}]}]}, "type"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": 3}]}]}, "text"),
    ({"temperature": 3}, "temperature"),
    ({"temperature": "hot"}, "temperature"),
    ({"top_p": -1}, "top_p"),
    ({"stop_sequences": "END"}, "stop_sequences"),
    ({"stream": "yes"}, "stream"),
    ({"thinking": {"type": "enabled"}}, "budget_tokens"),
    ({"thinking": {"type": "sometimes"}}, "thinking.type"),
    ({"system": 42}, "system"),
    ({"tools": [{"description": "nameless"}]}, "tools[0]"),
])
def test_malformed_requests_are_rejected_with_the_field_named(change, message):
    with pytest.raises(InvalidRequest) as caught:
        parse(claude_code_request(**change))
    assert message in str(caught.value)


def test_body_must_be_an_object():
    with pytest.raises(InvalidRequest):
        parse(["not", "an", "object"])


@pytest.mark.parametrize("raw", [b"{", b"", b'{"a": }', b"\xff\xfe{}", b"[" * 100_000])
def test_undecodable_bodies(raw):
    with pytest.raises(InvalidRequest):
        decode_json_body(raw)


def test_aliases_from_a_file_win_over_the_default_routing(tmp_path):
    import json

    aliases = tmp_path / "aliases.json"
    aliases.write_text(json.dumps({"qwen-coder": "coder-model", "claude-opus-*": "big-model"}))
    router = ModelRouter(Settings(model="main-model", fast_model="fast-model", aliases_file=str(aliases)))
    assert router.resolve("qwen-coder") == "coder-model"
    assert router.resolve("claude-opus-4-6") == "big-model"
    assert router.resolve("claude-haiku-4-5") == "fast-model"
    assert router.resolve("claude-sonnet-4-6") == "main-model"
    # No worker is up yet: the configured models are what is served.
    assert list(router.served) == ["main-model", "fast-model", "coder-model", "big-model"]
    with pytest.raises(NotFound):
        router.resolve("gpt-4o")


def test_a_broken_alias_file_is_a_clear_error(tmp_path):
    from hearth.models import AliasFileError

    aliases = tmp_path / "aliases.json"
    aliases.write_text("{not json")
    with pytest.raises(AliasFileError, match="HEARTH_ALIASES"):
        ModelRouter(Settings(aliases_file=str(aliases)))


@pytest.mark.parametrize("choice, callable_names, required", [
    (None, ["Bash", "Read"], False), ({"type": "auto"}, ["Bash", "Read"], False),
    ({"type": "any"}, ["Bash", "Read"], True), ({"type": "tool", "name": "Read"}, ["Read"], True),
    ({"type": "none"}, [], False),
])
def test_tool_choice(choice, callable_names, required):
    """tool_choice narrows what the answer may call; the model sees every tool, so the prompt stays."""
    body = claude_code_request(tools=claude_code_request()["tools"] + [
        {"name": "Read", "input_schema": {"type": "object"}}])
    if choice is not None:
        body["tool_choice"] = choice
    request, _ = parse(body)
    assert [t["function"]["name"] for t in request.tools] == ["Bash", "Read"]
    assert [t["function"]["name"] for t in request.tools_to_call()] == callable_names
    assert request.tool_required is required


def test_tool_choice_naming_an_unknown_tool_is_rejected():
    with pytest.raises(InvalidRequest, match="tool_choice"):
        parse(claude_code_request(tool_choice={"type": "tool", "name": "Nope"}))



@pytest.mark.parametrize("choice, callable_names, required", [
    (None, ["Bash", "Read"], False), ("auto", ["Bash", "Read"], False), ("required", ["Bash", "Read"], True),
    ({"type": "function", "function": {"name": "Read"}}, ["Read"], True), ("none", [], False),
])
def test_openai_tool_choice(choice, callable_names, required):
    from api.openai_request import parse_chat_request

    body = {"model": "main-model", "messages": [{"role": "user", "content": "list"}], "tools": [
        {"type": "function", "function": {"name": name, "parameters": {"type": "object"}}} for name in ("Bash", "Read")]}
    if choice is not None:
        body["tool_choice"] = choice
    request, _, _ = parse_chat_request(body, ROUTER)
    assert [t["function"]["name"] for t in request.tools] == ["Bash", "Read"]
    assert [t["function"]["name"] for t in request.tools_to_call()] == callable_names
    assert request.tool_required is required
    body["tool_choice"] = {"type": "function", "function": {"name": "Nope"}}
    with pytest.raises(InvalidRequest, match="tool_choice"):
        parse_chat_request(body, ROUTER)
