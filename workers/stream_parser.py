"""Turn a model's streamed text into typed content blocks, keeping the protocol exact whatever it writes.

Qwen3 writes `<think>…</think>` then its answer, with tool calls inside
`<tool_call>…</tool_call>` (JSON for Qwen3, XML for Qwen3-Coder: see
tool_calls.py). Tokens split tags anywhere (`</th` + `ink>`), so text that
could still become a tag is held back until the next piece decides it. The
parser knows nothing of Redis or SSE: it returns small tuples the job turns
into events.

Small and quantized models get their own format wrong now and then:

- A tag in the answer is the model's markup, unless it sits in code (inside
  backticks or a fenced block), where it is what the user asked for (say, a
  parser for such tags). So outside code, a `<think>` or `</think>` after
  thinking has closed (a second `</think>`), or a `</tool_call>` that closes
  no call, is dropped; in code it is text.
- A tool call that does not parse comes back as text, exactly as written,
  instead of failing the turn (`garbled_calls` counts them). So does any
  call when the request offers no tools (`tools`): its client has no tool
  loop to run one.
- A call cut off by a token cap (`finish(cut_off=True)`) is still a call,
  its arguments as far as they went and unclosed, once its tool's name is
  whole (`cut_call`; the job then reports max_tokens): Anthropic's own shape
  for a message cut inside a tool_use block, which no client runs as whole.
  A call cut only of its `</tool_call>` is whole, a call like any other.
- Anthropic's model stops at its tool calls: once a call is complete, only
  whitespace or another call may follow. Anything else ends the turn there
  (`ended`), and is not passed on (`dropped` counts its characters).
"""

from dataclasses import dataclass
import re
import secrets

from workers.tool_calls import ToolCallError, tool_call_parser

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
TOOL_OPEN, TOOL_CLOSE = "<tool_call>", "</tool_call>"
TEXT_TAGS = (TOOL_OPEN, TOOL_CLOSE, THINK_OPEN, THINK_CLOSE)
_BACKTICKS = re.compile(r"`+")


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


def _trailing_backticks(text: str) -> int:
    return len(text) - len(text.rstrip("`"))


class StreamParser:
    """Feed text pieces; get block events. Call `finish()` at the end.

    `in_thinking`: the prompt already opened `<think>` (output starts inside it).
    `thinking_enabled=False`: the model is not to think; a `<think>` it writes anyway is dropped.
    `tool_format`: "json" (Qwen3) or "xml" (Qwen3-Coder); `tools`: the tools offered (the chat
    template's shape), which type XML values; with none, nothing is a call.
    """

    def __init__(self, in_thinking: bool = False, thinking_enabled: bool = True, tool_format: str = "json",
                 tools=None):
        self._buffer = ""
        self._mode = "thinking" if in_thinking else "text"
        self._index = -1
        self._open_kind = None  # type of the block now open, if any
        self._seen_output = False
        self._thinking_enabled = thinking_enabled
        self._tool_format, self._tools = tool_format, tools
        self._call = None  # the tool call being parsed, and its raw text so far
        self._call_text = ""
        self._call_block = False  # the call being parsed has opened its tool_use block
        self._code = 0  # in the answer: the backtick run that opened the code we are in (0: not in code)
        self.tool_calls = 0
        self.garbled_calls = 0
        self.cut_call = False  # the output ended inside a call, kept as a tool_use as far as it went
        self.ended = False
        self.dropped = 0
        self._events: list = []

    @property
    def in_thinking(self) -> bool:
        return self._mode == "thinking"

    def feed(self, piece: str) -> list:
        if self.ended:
            self.dropped += len(piece)
            return []
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

    def finish(self, cut_off: bool = False) -> list:
        """The output is over; `cut_off`: a token cap ended it, not the model."""
        if not self.ended:
            self._drain(final=True)
            if self._mode == "tool_call":
                self._finish_call(self._buffer, closed=False, cut=cut_off)
            elif self._buffer:
                self._emit_text(self._buffer)
        self._buffer = ""
        self._close_block()
        return self._take()

    def _take(self) -> list:
        events, self._events = self._events, []
        return events

    def _drain(self, final: bool):
        while self._buffer and not self.ended:
            tags = self._tags()
            found = [(self._buffer.find(tag), tag) for tag in tags]
            found = [(pos, tag) for pos, tag in found if pos >= 0]
            if found:
                pos, tag = min(found)
                before, self._buffer = self._buffer[:pos], self._buffer[pos + len(tag):]
                self._on_tag(before, tag)
                continue
            keep = 0 if final else _held_back(self._buffer, tags)
            if self._mode == "text" and not final:
                keep = max(keep, _trailing_backticks(self._buffer))  # "``" + "`" is one run of three
            ready = self._buffer[: len(self._buffer) - keep]
            self._buffer = self._buffer[len(ready):]
            if self._mode == "tool_call":
                self._feed_call(ready)
            else:
                self._emit_text(ready)
            return

    def _tags(self):
        if self._mode == "thinking":
            return (THINK_CLOSE,)
        if self._mode == "tool_call":
            return (TOOL_CLOSE,)
        return TEXT_TAGS

    def _on_tag(self, before: str, tag: str):
        if tag == TOOL_CLOSE and self._mode == "tool_call":
            self._finish_call(before, closed=True)
            return
        if tag == THINK_CLOSE and self._mode == "thinking":
            self._emit_text(before)
            self._close_block()
            self._mode = "text"
            self._seen_output = True
            return
        self._emit_text(before)
        if self._code:
            self._emit_text(tag)  # in code: what the user asked for, not markup
        elif tag == THINK_OPEN and self._thinking_enabled and not self._seen_output:
            self._close_block()
            self._mode = "thinking"
            self._seen_output = True
        elif tag == TOOL_OPEN:
            # The text block stays open: a call that does not parse goes on in it, as text.
            self._mode, self._call_text, self._call_block = "tool_call", "", False
            self._call = tool_call_parser(self._tool_format, self._tools)
        # Otherwise a stray <think>, </think> or </tool_call> outside code: the model's markup, dropped.

    def _feed_call(self, text: str):
        self._call_text += text
        self._call_parts(self._call.feed(text))

    def _finish_call(self, rest: str, closed: bool, cut: bool = False):
        """The call's text is all in (at `</tool_call>`, or at the end of the output; `cut` by a cap)."""
        self._call_text += rest
        try:
            parts = self._call.feed(rest)
            cut = cut and not self._call.whole()  # a cap that took only its `</tool_call>` cut nothing
            self._call_parts(parts + (self._call.cut() if cut else self._call.close()))
        except ToolCallError:
            if not self._call_block:
                self._call, self._mode = None, "text"
                self.garbled_calls += 1
                self._emit_text(TOOL_OPEN + self._call_text + (TOOL_CLOSE if closed else ""))
                return
        self._close_block()
        if cut:
            self.cut_call = True
        else:
            self.tool_calls += 1
        self._call, self._mode = None, "text"

    def _emit_text(self, text: str):
        if not text:
            return
        if self._mode == "text":
            if self.tool_calls and text.strip():
                # After a complete call the turn is over: Anthropic's model stops at its tool calls.
                self.ended = True
                self.dropped += len(text) + len(self._buffer)
                self._buffer = ""
                return
            self._track_code(text)
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

    def _track_code(self, text: str):
        """Follow backtick runs: a run opens code, the same run closes inline code, three or more close a fence."""
        for run in _BACKTICKS.findall(text):
            if not self._code:
                self._code = len(run)
            elif (self._code >= 3 and len(run) >= self._code) or len(run) == self._code:
                self._code = 0

    def _call_parts(self, parts):
        for kind, value in parts:
            if kind == "start":
                self._close_block()
                self._open_block({"type": "tool_use", "id": new_tool_use_id(), "name": value, "input": {}})
                self._call_block = True
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

