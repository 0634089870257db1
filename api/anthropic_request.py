"""Parse an Anthropic Messages request into the worker's GenerationRequest.

Permissive where Claude Code is unusual (adaptive thinking, `role: system`
in mid-history, extra top-level fields, unknown block types), strict where
a wrong value would make the job fail later: those get a 400 now.
"""

import json

from api.errors import InvalidRequest
from api.models import ModelRouter
from hearth.contract import GenerationRequest

BILLING_HEADER_PREFIX = "x-anthropic-billing-header:"
IMAGE_PLACEHOLDER = "[image omitted: this model reads text only]"
DOCUMENT_PLACEHOLDER = "[document omitted: this model reads text only]"
ROLES = ("user", "assistant", "system")


def require(condition, message):
    if not condition:
        raise InvalidRequest(message)


def number(body, name, low, high, integer=False):
    value = body.get(name)
    if value is None:
        return None
    kind = int if integer else (int, float)
    require(isinstance(value, kind) and not isinstance(value, bool), f"{name}: expected a number, got {value!r}")
    require(low <= value <= high, f"{name}: must be between {low} and {high}")
    return value


def _block_text(block, where) -> str:
    require(isinstance(block.get("text"), str), f"{where}: a text block needs a string `text`")
    return block["text"]


def system_text(system, where="system") -> str | None:
    """A string, or text blocks (with cache_control); Claude Code's billing header is dropped."""
    if system is None:
        return None
    if isinstance(system, str):
        return system
    require(isinstance(system, list), f"{where}: expected a string or a list of text blocks")
    texts = []
    for i, block in enumerate(system):
        require(isinstance(block, dict) and block.get("type") == "text", f"{where}[{i}]: expected a text block")
        texts.append(_block_text(block, f"{where}[{i}]"))
    # The billing header carries a per-request nonce: kept, it would defeat prefix caching.
    if texts and texts[0].startswith(BILLING_HEADER_PREFIX):
        texts = texts[1:]
    return "\n\n".join(texts)


def tool_result_text(block, where) -> str:
    content = block.get("content", "")
    if isinstance(content, str):
        text = content
    else:
        require(isinstance(content, list), f"{where}: tool_result content must be a string or a list of blocks")
        parts = []
        for part in content:
            require(isinstance(part, dict), f"{where}: tool_result content blocks must be objects")
            if part.get("type") == "text":
                parts.append(_block_text(part, where))
            elif part.get("type") == "image":
                parts.append(IMAGE_PLACEHOLDER)
            elif part.get("type") == "document":
                parts.append(DOCUMENT_PLACEHOLDER)
        text = "\n".join(parts)
    return f"Error: {text}" if block.get("is_error") else text


def _content_blocks(content, where):
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    require(isinstance(content, list), f"{where}.content: expected a string or a list of content blocks")
    for i, block in enumerate(content):
        require(isinstance(block, dict) and isinstance(block.get("type"), str),
                 f"{where}.content[{i}]: expected an object with a `type`")
    return content


def _user_messages(blocks, where) -> list:
    """User content in order: tool results become `tool` messages, the rest one user message."""
    out, texts = [], []
    for i, block in enumerate(blocks):
        kind = block["type"]
        if kind == "tool_result":
            require(isinstance(block.get("tool_use_id"), str), f"{where}.content[{i}]: tool_result needs a tool_use_id")
            out.append({"role": "tool", "tool_call_id": block["tool_use_id"],
                        "content": tool_result_text(block, f"{where}.content[{i}]")})
        elif kind == "text":
            texts.append(_block_text(block, f"{where}.content[{i}]"))
        elif kind == "image":
            texts.append(IMAGE_PLACEHOLDER)
        elif kind == "document":
            texts.append(DOCUMENT_PLACEHOLDER)
    if texts:
        out.append({"role": "user", "content": "\n\n".join(texts)})
    return out


def _assistant_message(blocks, where) -> dict:
    texts, thinking, calls = [], [], []
    for i, block in enumerate(blocks):
        kind = block["type"]
        if kind == "text":
            texts.append(_block_text(block, f"{where}.content[{i}]"))
        elif kind == "thinking":
            thinking.append(block.get("thinking") or "")
        elif kind == "tool_use":
            require(isinstance(block.get("name"), str), f"{where}.content[{i}]: tool_use needs a name")
            arguments = block.get("input", {})
            require(isinstance(arguments, dict), f"{where}.content[{i}]: tool_use input must be an object")
            calls.append({"type": "function", "id": block.get("id"),
                          "function": {"name": block["name"], "arguments": arguments}})
        # redacted_thinking holds nothing this model can read.
    message = {"role": "assistant", "content": "".join(texts)}
    if thinking:
        message["reasoning_content"] = "\n".join(thinking)
    if calls:
        message["tool_calls"] = calls
    return message


def each_message(messages, roles):
    """(where, role, message) for each message of a non-empty list, roles checked."""
    require(isinstance(messages, list) and messages, "messages: expected a non-empty list")
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        require(isinstance(message, dict), f"{where}: expected an object")
        role = message.get("role")
        require(role in roles, f"{where}.role: expected one of {', '.join(roles)}, got {role!r}")
        yield where, role, message


def chat_messages(messages) -> list:
    out = []
    for where, role, message in each_message(messages, ROLES):
        require("content" in message, f"{where}: missing `content`")
        blocks = _content_blocks(message["content"], where)
        if role == "user":
            out.extend(_user_messages(blocks, where))
        elif role == "assistant":
            out.append(_assistant_message(blocks, where))
        else:
            # Rendered where it stands: the Qwen3 template supports mid-history system turns.
            out.append({"role": "system", "content": "\n\n".join(
                _block_text(b, where) for b in blocks if b["type"] == "text")})
    return out


def chat_tools(tools) -> list | None:
    if tools is None:
        return None
    require(isinstance(tools, list), "tools: expected a list")
    out = []
    for i, tool in enumerate(tools):
        require(isinstance(tool, dict) and isinstance(tool.get("name"), str), f"tools[{i}]: a tool needs a name")
        if "input_schema" not in tool:
            continue  # server tools (web search, …) run at Anthropic, not here
        if tool.get("defer_loading"):
            continue  # loaded later by tool search, if at all: not in the model's context (Claude Code 2.1.3xx)
        require(isinstance(tool["input_schema"], dict), f"tools[{i}].input_schema: expected an object")
        out.append({"type": "function", "function": {
            "name": tool["name"], "description": tool.get("description", ""), "parameters": tool["input_schema"]}})
    return out or None


def apply_tool_choice(tools: list | None, choice) -> tuple[list | None, bool]:
    """The names of the tools the answer may call (None: any offered), and whether it must call one.

    `none` lets it call none; `tool` only the one named; `any` and `tool` make
    the answer call one (the worker's tool-call guide opens it). The model sees
    every tool offered whatever the choice (GenerationRequest.callable_tools).
    """
    if choice is None or tools is None:
        return None, False
    require(isinstance(choice, dict) and choice.get("type") in ("auto", "any", "tool", "none"),
             "tool_choice: expected {type: auto|any|tool|none}")
    if choice["type"] == "none":
        return [], False
    if choice["type"] == "tool":
        require(any(t["function"]["name"] == choice.get("name") for t in tools),
                f"tool_choice.name: no tool named {choice.get('name')!r}")
        return [choice["name"]], True
    return None, choice["type"] == "any"


def thinking_options(thinking) -> tuple[bool, int | None]:
    if thinking is None:
        return False, None
    require(isinstance(thinking, dict), "thinking: expected an object")
    kind = thinking.get("type")
    if kind == "enabled":
        budget = thinking.get("budget_tokens")
        require(isinstance(budget, int) and budget > 0, "thinking.budget_tokens: expected a positive integer")
        return True, budget
    if kind == "adaptive":
        return True, None
    require(kind == "disabled", f"thinking.type: expected enabled, adaptive or disabled, got {kind!r}")
    return False, None


def parse_messages_request(body, router: ModelRouter) -> tuple[GenerationRequest, bool]:
    """Returns the job's request and whether the client asked for a stream."""
    require(isinstance(body, dict), "request body: expected a JSON object")
    model = body.get("model")
    require(isinstance(model, str) and model, "model: expected a model name")
    max_tokens = body.get("max_tokens")
    require(isinstance(max_tokens, int) and not isinstance(max_tokens, bool) and max_tokens > 0,
             "max_tokens: expected a positive integer")
    stop_sequences = body.get("stop_sequences") or []
    require(isinstance(stop_sequences, list) and all(isinstance(s, str) for s in stop_sequences),
             "stop_sequences: expected a list of strings")
    stream = body.get("stream", False)
    require(isinstance(stream, bool), "stream: expected true or false")
    enable_thinking, budget = thinking_options(body.get("thinking"))
    display = body["thinking"].get("display") if isinstance(body.get("thinking"), dict) else None
    temperature = number(body, "temperature", 0.0, 2.0)
    top_p = number(body, "top_p", 0.0, 1.0)
    top_k = number(body, "top_k", 0, 1_000_000, integer=True)
    tools = chat_tools(body.get("tools"))
    callable_tools, tool_required = apply_tool_choice(tools, body.get("tool_choice"))
    request = GenerationRequest(
        model=router.resolve(model),
        requested_model=model,
        messages=chat_messages(body.get("messages")),
        max_tokens=max_tokens,
        system=system_text(body.get("system")),
        tools=tools,
        callable_tools=callable_tools,
        tool_required=tool_required,
        enable_thinking=enable_thinking,
        thinking_budget=budget,
        # "omitted" (Claude Code 2.1.3xx): thinking blocks without their text; anything else shows it.
        thinking_display="omitted" if display == "omitted" else None,
        temperature=1.0 if temperature is None else float(temperature),
        top_p=1.0 if top_p is None else float(top_p),
        top_k=top_k or 0,
        stop_sequences=stop_sequences,
    )
    return request, stream


def decode_json_body(raw: bytes):
    try:
        return json.loads(raw)
    except UnicodeDecodeError:
        raise InvalidRequest("request body: not valid UTF-8") from None
    except (ValueError, RecursionError) as exc:
        raise InvalidRequest(f"request body: malformed JSON ({exc})") from None
