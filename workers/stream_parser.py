"""Turn a model's streamed text into typed content blocks.

Qwen3 writes `<think>…</think>` then its answer, with tool calls inside
`<tool_call>…</tool_call>` (JSON for Qwen3, XML for Qwen3-Coder: see
tool_calls.py, which streams their arguments as they come). Tokens split tags
anywhere (`</th` + `ink>`), so text that could still become a tag is held
back until the next piece decides it. The parser knows nothing of Redis or
SSE: it returns small tuples the job turns into events.
"""

import contextlib
from dataclasses import dataclass
import secrets

from workers.tool_calls import TOOL_CALL_PARSERS, ToolCallError  # noqa: F401 - re-exported

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
TOOL_OPEN, TOOL_CLOSE = "<tool_call>", "</tool_call>"


@dataclass
class BlockStart:
    index: int
    block: dict


@dataclass
class BlockDelta:
    index: int
    delta: dict


@dataclass
class BlockStop:
    index: int


def new_tool_use_id() -> str:
    return "toolu_" + secrets.token_hex(12)


def _held_back(text: str, tags) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of a tag."""
    longest = 0
    for tag in tags:
        for size in range(min(len(tag) - 1, len(text)), longest, -1):
            if text.endswith(tag[:size]):
                longest = size
                break
    return longest


class StreamParser:
    """Feed text pieces; get block events. Call `finish()` at the end.

    `in_thinking`: the prompt already opened `<think>` (output starts inside it).
    `thinking_enabled=False` treats a stray `<think>` as plain text.
    `tool_format`: "json" (Qwen3) or "xml" (Qwen3-Coder); `tools` types XML values.
    """

    def __init__(self, in_thinking: bool = False, thinking_enabled: bool = True, tool_format: str = "json",
                 tools=None):
        self._buffer = ""
        self._mode = "text"
        self._index = -1
        self._open_kind = None  # type of the block now open, if any
        self._seen_output = False
        self._thinking_enabled = thinking_enabled
        self._tool_format, self._tools = tool_format, tools
        self._call = None  # the tool call being parsed, and its raw text so far
        self._call_text = ""
        self.tool_calls = 0
        self._events: list = []
        if in_thinking:
            self._mode = "thinking"

    @property
    def in_thinking(self) -> bool:
        return self._mode == "thinking"

    def feed(self, piece: str) -> list:
        self._buffer += piece
        self._drain(final=False)
        return self._take()

    def close_thinking(self) -> list:
        """Force thinking to end (its budget is spent); later text is the answer."""
        if self._mode == "thinking":
            self._emit_text(self._buffer)
            self._buffer = ""
            self._close_block()
            self._mode = "text"
        return self._take()

    def finish(self) -> list:
        self._drain(final=True)
        if self._mode == "tool_call":
            self._finish_unterminated_call()
        elif self._buffer:
            self._emit_text(self._buffer)
        self._buffer = ""
        self._close_block()
        return self._take()

    def _finish_unterminated_call(self):
        """Output ended inside a call (end token or max_tokens before `</tool_call>`)."""
        self._call_parts(self._call.feed(self._buffer))
        if self._open_kind == "tool_use":
            # Complete but for the closing tag, it counts; cut off (ToolCallError), the block
            # ends as it is, like Anthropic's at max_tokens.
            with contextlib.suppress(ToolCallError):
                self._call_parts(self._call.close())
                self.tool_calls += 1
        else:
            self._mode = "text"
            self._emit_text(TOOL_OPEN + self._call_text)
        self._call, self._mode = None, "text"

    def _take(self) -> list:
        events, self._events = self._events, []
        return events

    def _drain(self, final: bool):
        while self._buffer:
            tags = self._tags()
            found = [(self._buffer.find(tag), tag) for tag in tags]
            found = [(pos, tag) for pos, tag in found if pos >= 0]
            if found:
                pos, tag = min(found)
                before, self._buffer = self._buffer[:pos], self._buffer[pos + len(tag):]
                self._on_tag(before, tag)
                continue
            keep = 0 if final else _held_back(self._buffer, tags)
            ready = self._buffer[: len(self._buffer) - keep]
            self._buffer = self._buffer[len(ready):]
            if self._mode == "tool_call":
                self._call_text += ready
                self._call_parts(self._call.feed(ready))
            else:
                self._emit_text(ready)
            return

    def _tags(self):
        if self._mode == "thinking":
            return (THINK_CLOSE,)
        if self._mode == "tool_call":
            return (TOOL_CLOSE,)
        if self._thinking_enabled and not self._seen_output:
            return (THINK_OPEN, TOOL_OPEN)
        return (TOOL_OPEN,)

    def _on_tag(self, before: str, tag: str):
        if tag == TOOL_CLOSE:
            self._call_parts(self._call.feed(before))
            self._call_parts(self._call.close())
            self._close_block()
            self.tool_calls += 1
            self._call, self._mode = None, "text"
            return
        self._emit_text(before)
        self._close_block()
        self._mode = {THINK_OPEN: "thinking", THINK_CLOSE: "text", TOOL_OPEN: "tool_call"}[tag]
        if tag == TOOL_OPEN:
            self._call, self._call_text = TOOL_CALL_PARSERS[self._tool_format](self._tools), ""
        self._seen_output = True

    def _emit_text(self, text: str):
        if not text:
            return
        kind = "thinking" if self._mode == "thinking" else "text"
        if self._open_kind != kind:
            # Qwen3 pads blocks with newlines; a block never starts with them.
            text = text.lstrip()
            if not text:
                return
            self._close_block()
            self._open_block({"type": kind, kind: ""})
        self._seen_output = True
        key = "text_delta" if kind == "text" else "thinking_delta"
        self._events.append(BlockDelta(self._index, {"type": key, kind: text}))

    def _call_parts(self, parts):
        for kind, value in parts:
            if kind == "start":
                self._close_block()
                self._open_block({"type": "tool_use", "id": new_tool_use_id(), "name": value, "input": {}})
            else:
                self._events.append(BlockDelta(self._index, {"type": "input_json_delta", "partial_json": value}))

    def _open_block(self, block: dict):
        self._index += 1
        self._open_kind = block["type"]
        self._events.append(BlockStart(self._index, block))

    def _close_block(self):
        if self._open_kind is None:
            return
        if self._open_kind == "thinking":
            # Anthropic closes every thinking block with a signature; ours is a marker, not a proof.
            self._events.append(BlockDelta(self._index, {"type": "signature_delta", "signature": "hearth-local"}))
        self._events.append(BlockStop(self._index))
        self._open_kind = None
