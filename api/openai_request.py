"""Parse an OpenAI chat-completions request into the worker's GenerationRequest.

For clients that speak OpenAI (aider, opencode, Continue). Messages and
tools are already close to the chat template's shape; tool-call arguments
arrive as JSON strings and are decoded for the template.
"""

import json

from api.anthropic_request import IMAGE_PLACEHOLDER, each_message, number, require
from api.errors import InvalidRequest
from api.models import ModelRouter
from hearth.contract import GenerationRequest

DEFAULT_MAX_TOKENS = 4096
ROLES = ("system", "developer", "user", "assistant", "tool")


def _text(content, where) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    require(isinstance(content, list), f"{where}.content: expected a string or a list of parts")
    parts = []
    for i, part in enumerate(content):
        require(isinstance(part, dict), f"{where}.content[{i}]: expected an object")
        if part.get("type") == "text":
            require(isinstance(part.get("text"), str), f"{where}.content[{i}].text: expected a string")
            parts.append(part["text"])
        elif part.get("type") in ("image_url", "input_image"):
            parts.append(IMAGE_PLACEHOLDER)
    return "\n".join(parts)


def _tool_calls(calls, where) -> list:
    require(isinstance(calls, list), f"{where}.tool_calls: expected a list")
    out = []
    for i, call in enumerate(calls):
        function = call.get("function") if isinstance(call, dict) else None
        require(isinstance(function, dict) and isinstance(function.get("name"), str),
                 f"{where}.tool_calls[{i}]: expected a function with a name")
        arguments = function.get("arguments") or "{}"
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except ValueError:
                raise InvalidRequest(f"{where}.tool_calls[{i}].function.arguments: not valid JSON") from None
        out.append({"type": "function", "id": call.get("id"),
                    "function": {"name": function["name"], "arguments": arguments}})
    return out


def chat_messages(messages) -> tuple[str | None, list]:
    out = []
    for where, role, message in each_message(messages, ROLES):
        item = {"role": "system" if role == "developer" else role, "content": _text(message.get("content"), where)}
        if role == "assistant":
            if message.get("tool_calls"):
                item["tool_calls"] = _tool_calls(message["tool_calls"], where)
            if isinstance(message.get("reasoning_content"), str):
                item["reasoning_content"] = message["reasoning_content"]
        if role == "tool":
            item["tool_call_id"] = message.get("tool_call_id")
        out.append(item)
    # A leading system message is the system prompt; later ones stay where they are.
    if out[0]["role"] == "system":
        return out[0]["content"], out[1:]
    return None, out


def chat_tools(tools) -> list | None:
    if not tools:
        return None
    require(isinstance(tools, list), "tools: expected a list")
    for i, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        require(isinstance(function, dict) and isinstance(function.get("name"), str),
                 f"tools[{i}]: expected {{type: function, function: {{name, parameters}}}}")
    return tools


def openai_tool_choice(tools: list | None, choice) -> tuple[list | None, bool]:
    """The names of the tools the answer may call (None: any offered) and whether it must call one:
    "none" lets it call none, "required" makes it call one, a named function makes it call that one.
    The model sees every tool offered whatever the choice (GenerationRequest.callable_tools)."""
    if choice is None or tools is None or choice == "auto":
        return None, False
    if choice == "none":
        return [], False
    if choice == "required":
        return None, True
    name = choice.get("function", {}).get("name") if isinstance(choice, dict) else None
    require(isinstance(name, str), 'tool_choice: expected "none", "auto", "required" or '
                                   '{type: function, function: {name}}')
    require(any(t["function"]["name"] == name for t in tools), f"tool_choice.function.name: no tool named {name!r}")
    return [name], True


def thinking_enabled(body) -> bool:
    kwargs = body.get("chat_template_kwargs") or {}
    if isinstance(kwargs, dict) and isinstance(kwargs.get("enable_thinking"), bool):
        return kwargs["enable_thinking"]
    return body.get("reasoning_effort") not in ("none", "minimal")


def parse_chat_request(body, router: ModelRouter) -> tuple[GenerationRequest, bool, bool]:
    """Returns the job's request, whether to stream, and whether to send a usage chunk."""
    require(isinstance(body, dict), "request body: expected a JSON object")
    model = body.get("model")
    require(isinstance(model, str) and model, "model: expected a model name")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens")) or DEFAULT_MAX_TOKENS
    require(isinstance(max_tokens, int) and not isinstance(max_tokens, bool) and max_tokens > 0,
             "max_tokens: expected a positive integer")
    stop = body.get("stop") or []
    stop = [stop] if isinstance(stop, str) else stop
    require(isinstance(stop, list) and all(isinstance(s, str) for s in stop), "stop: expected a string or a list")
    stream = body.get("stream", False)
    require(isinstance(stream, bool), "stream: expected true or false")
    options = body.get("stream_options") or {}
    temperature = number(body, "temperature", 0.0, 2.0)
    top_p = number(body, "top_p", 0.0, 1.0)
    system, messages = chat_messages(body.get("messages"))
    tools = chat_tools(body.get("tools"))
    callable_tools, tool_required = openai_tool_choice(tools, body.get("tool_choice"))
    request = GenerationRequest(
        model=router.resolve(model), requested_model=model, messages=messages, max_tokens=max_tokens,
        system=system, tools=tools, callable_tools=callable_tools, tool_required=tool_required,
        enable_thinking=thinking_enabled(body),
        temperature=1.0 if temperature is None else float(temperature),
        top_p=1.0 if top_p is None else float(top_p), stop_sequences=stop,
    )
    return request, stream, bool(isinstance(options, dict) and options.get("include_usage"))
