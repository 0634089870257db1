"""Incremental parsers for the body of one `<tool_call>…</tool_call>`.

Each turns text pieces into ("start", name) once the tool's name is known,
then ("args", json_fragment) pieces whose concatenation is the arguments
object, so clients see arguments as they are generated. `close()` runs at
`</tool_call>` and raises ToolCallError for a call that does not parse.

- Qwen3 writes JSON: `{"name": "Bash", "arguments": {"command": "ls"}}`.
- Qwen3-Coder writes XML: `<function=Bash><parameter=command>ls</parameter></function>`;
  values are coerced to the tool schema's types by mlx-lm's own parser.
"""

import json
import re

from mlx_lm.tool_parsers import qwen3_coder


class ToolCallError(ValueError):
    """The model wrote a tool call that does not parse."""


_JSON_HEAD = re.compile(r'\s*\{\s*"name"\s*:\s*("(?:[^"\\]|\\.)*")\s*,\s*"arguments"\s*:\s*')


class JsonToolCall:
    def __init__(self, tools=None):
        self._buffer = ""
        self._streaming = False
        self._sent = ""

    def feed(self, text: str) -> list:
        self._buffer += text
        out = []
        if not self._streaming:
            head = _JSON_HEAD.match(self._buffer)
            # Stream only `"arguments": {…}`; a stringified object or another key order is parsed whole at close().
            if head is None or len(self._buffer) == head.end() or self._buffer[head.end()] != "{":
                return out
            out.append(("start", json.loads(head.group(1))))
            self._buffer = self._buffer[head.end():]
            self._streaming = True
        # Hold back a final "}" (it may close the outer object) and whitespace after it.
        body = self._buffer.rstrip()
        cut = len(body) - 1 if body.endswith("}") else len(body)
        if cut > 0:
            out.append(("args", self._buffer[:cut]))
            self._sent += self._buffer[:cut]
            self._buffer = self._buffer[cut:]
        return out

    def close(self) -> list:
        if not self._streaming:
            try:
                call = json.loads(self._buffer)
                name, arguments = call["name"], call.get("arguments", {})
                if isinstance(arguments, str):
                    arguments = json.loads(arguments or "{}")
            except (ValueError, KeyError, TypeError) as exc:
                raise ToolCallError(f"unparseable tool call: {self._buffer[:200]!r}") from exc
            return [("start", name), ("args", json.dumps(arguments))]
        rest = self._buffer.rstrip()
        if not rest.endswith("}"):
            raise ToolCallError(f"tool call not closed: {(self._sent + rest)[-200:]!r}")
        rest = rest[:-1]
        arguments = self._sent + rest
        try:
            parsed = json.loads(arguments)
        except ValueError as exc:
            raise ToolCallError(f"tool call arguments are not JSON: {arguments[:200]!r}") from exc
        if not isinstance(parsed, dict):
            raise ToolCallError(f"tool call arguments are not an object: {arguments[:200]!r}")
        return [("args", rest)] if rest else []


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
        if self._name is None:
            raise ToolCallError(f"unparseable tool call: {self._buffer[:200]!r}")
        body = self._buffer.rstrip()
        if not body.endswith("</function>"):
            body += "</function>"
        out = self._new_parameters(self._parse(body))
        return out + [("args", "}" if self._sent_keys else "{}")]

    def _complete_parameters(self) -> dict:
        end = self._buffer.rfind("</parameter>")
        if end < 0:
            return {}
        return self._parse(self._buffer[:end + len("</parameter>")] + "</function>")

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


TOOL_CALL_PARSERS = {"json": JsonToolCall, "xml": XmlToolCall}


def tool_format_of(chat_template) -> str:
    """Qwen3-Coder templates teach the XML format; Qwen3's teach JSON."""
    return "xml" if isinstance(chat_template, str) and "<function=" in chat_template else "json"
