"""Parsers for the body of one `<tool_call>…</tool_call>`.

Each turns text pieces into ("start", name) once the tool's name is known,
then ("args", json_fragment) pieces whose concatenation is the arguments
object. `close()` runs when the call's text is all in and raises
ToolCallError for a call that does not parse (the stream parser then
returns it as text).

A request that offers no tools gets no call: `tool_call_parser` gives it
NoCall, whatever the model writes after `<tool_call>` does not parse, and a
client with no tool loop never sees a tool_use. A call to some other tool
than those offered is still a call (the job logs it): the client answers it
with an error (Claude Code: "No such tool available"), and the model can try
again.

`cut()` runs instead when a token cap ended the output inside the call: its
arguments as far as they went, left unclosed, as Anthropic's API streams a
tool_use cut off by max_tokens. A client must not run such a call, and
Claude Code does not: it answers the model that the input was not valid
JSON, and the loop goes on (a closed object, even under max_tokens, it runs).
A call `whole()` but for its `</tool_call>` was not cut: it closes, a call
like any other.

- Qwen3 writes JSON: `{"name": "Bash", "arguments": {"command": "ls"}}`. A
  JSON call is only known to parse once it is whole, so it is held until
  then: a call streamed piece by piece and garbled at its end would leave the
  client a tool_use block it cannot parse. A cut one keeps its arguments'
  text as written, the value being written too, once its name is whole.
- Qwen3-Coder writes XML: `<function=Bash><parameter=command>ls</parameter></function>`;
  each parameter streams once it is complete (so what was sent always closes
  into an object), values coerced to the tool schema's types by mlx-lm's own
  parser. A cut one ends with its complete parameters (Anthropic's default:
  a value streams once whole).
"""

import json
import re

from mlx_lm.tool_parsers import qwen3_coder


class ToolCallError(ValueError):
    """The model wrote a tool call that does not parse."""


class JsonToolCall:
    def __init__(self, tools=None):
        self._buffer = ""

    def feed(self, text: str) -> list:
        self._buffer += text
        return []

    def close(self) -> list:
        try:
            call = json.loads(self._buffer)
            name, arguments = call["name"], call.get("arguments", {})
            if isinstance(arguments, str):
                arguments = json.loads(arguments or "{}")
        except (ValueError, KeyError, TypeError) as exc:
            raise ToolCallError(f"unparseable tool call: {self._buffer[:200]!r}") from exc
        if not isinstance(name, str) or not name or not isinstance(arguments, dict):
            raise ToolCallError(f"tool call without a name or an arguments object: {self._buffer[:200]!r}")
        return [("start", name), ("args", json.dumps(arguments))]

    def whole(self) -> bool:
        try:
            self.close()
        except ToolCallError:
            return False
        return True

    def cut(self) -> list:
        head = _JSON_NAME.match(self._buffer)
        after = self._buffer[head.end():] if head else ""
        # The template's (and the guide's) order: the name, then the arguments, which may not have begun.
        if head is None or not (after.startswith(_ARGUMENTS_KEY) or _ARGUMENTS_KEY.startswith(after)):
            raise ToolCallError(f"tool call cut before its name: {self._buffer[:200]!r}")
        return [("start", json.loads(head["name"])), ("args", after[len(_ARGUMENTS_KEY):] or "{")]


# A JSON call's opening as Qwen3's template writes it (json.dumps' separators): its name, then its arguments.
_JSON_NAME = re.compile(r'\s*\{"name": (?P<name>"(?:[^"\\]|\\.)+")')
_ARGUMENTS_KEY = ', "arguments": '
_FUNCTION = re.compile(r"\s*<function=([^\s<>]+)>")


class XmlToolCall:
    def __init__(self, tools=None):
        self._tools = tools
        self._buffer = ""
        self._name = None
        self._sent_keys = []

    def feed(self, text: str) -> list:
        self._buffer += text
        out = []
        if self._name is None:
            head = _FUNCTION.match(self._buffer)
            if head is None:
                return out
            self._name = head.group(1)
            out.append(("start", self._name))
        return out + self._new_parameters(self._complete_parameters())

    def close(self) -> list:
        """Never raises once the call's block has started: what was sent closes into an object."""
        if self._name is None:
            raise ToolCallError(f"unparseable tool call: {self._buffer[:200]!r}")
        body = self._buffer.rstrip()
        if not body.endswith("</function>"):
            body += "</function>"
        try:
            out = self._new_parameters(self._parse(body))
        except ToolCallError:
            out = []  # the parameters already sent are the call
        return out + [("args", "}" if self._sent_keys else "{}")]

    def whole(self) -> bool:
        return self._name is not None and "</function>" in self._buffer

    def cut(self) -> list:
        if self._name is None:
            raise ToolCallError(f"tool call cut before its function: {self._buffer[:200]!r}")
        return [] if self._sent_keys else [("args", "{")]  # the parameters already sent, unclosed

    def _complete_parameters(self) -> dict:
        end = self._buffer.rfind("</parameter>")
        if end < 0:
            return {}
        try:
            return self._parse(self._buffer[:end + len("</parameter>")] + "</function>")
        except ToolCallError:
            return {}  # perhaps whole once more has come; close() decides

    def _parse(self, text: str) -> dict:
        try:
            return qwen3_coder.parse_tool_call(text[text.index("<function="):], self._tools)["arguments"]
        except (ValueError, KeyError) as exc:
            raise ToolCallError(f"unparseable tool call: {text[:200]!r}") from exc

    def _new_parameters(self, arguments: dict) -> list:
        out = []
        for key, value in arguments.items():
            if key in self._sent_keys:
                continue
            opener = "{" if not self._sent_keys else ", "
            out.append(("args", f"{opener}{json.dumps(key)}: {json.dumps(value)}"))
            self._sent_keys.append(key)
        return out


class NoCall:
    """The body of a `<tool_call>` in a request that offers no tools: held, and never a call."""

    def __init__(self):
        self._buffer = ""

    def feed(self, text: str) -> list:
        self._buffer += text
        return []

    def close(self) -> list:
        raise ToolCallError(f"a tool call, but the request offers no tools: {self._buffer[:200]!r}")

    cut = close

    def whole(self) -> bool:
        return False


TOOL_CALL_PARSERS = {"json": JsonToolCall, "xml": XmlToolCall}


def tool_call_parser(tool_format: str, tools):
    """The parser for one call's body: the model's format, or NoCall when no tools are offered."""
    return TOOL_CALL_PARSERS[tool_format](tools) if tools else NoCall()


def tool_format_of(chat_template) -> str:
    """Qwen3-Coder templates teach the XML format; Qwen3's teach JSON."""
    return "xml" if isinstance(chat_template, str) and "<function=" in chat_template else "json"
