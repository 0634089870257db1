"""Assemble content blocks from block events, as a client's stream helper would.

The worker uses it to build a job's result; the API uses it to show what a
running job has produced so far. Blocks are Anthropic-shaped dicts, the
neutral form every formatter starts from.
"""

import jiter

from hearth.contract import BLOCK_START, BLOCK_STOP, DELTA, Event


class MessageAssembler:
    def __init__(self):
        self.blocks: list[dict] = []
        self._partial_json: dict[int, str] = {}

    def apply(self, event: Event):
        if event.type == BLOCK_START:
            self.blocks.append(dict(event.data["block"]))
        elif event.type == DELTA:
            self._apply_delta(event.data["index"], event.data["delta"])
        elif event.type == BLOCK_STOP:
            index = event.data["index"]
            if index in self._partial_json:
                raw = self._partial_json.pop(index)
                self.blocks[index]["input"] = _arguments(raw)

    def _apply_delta(self, index: int, delta: dict):
        block = self.blocks[index]
        kind = delta["type"]
        if kind == "text_delta":
            block["text"] += delta["text"]
        elif kind == "thinking_delta":
            block["thinking"] += delta["thinking"]
        elif kind == "signature_delta":
            block["signature"] = delta["signature"]
        elif kind == "input_json_delta":
            self._partial_json[index] = self._partial_json.get(index, "") + delta["partial_json"]

    def text(self, kind: str = "text") -> str:
        return "".join(b.get(kind, "") for b in self.blocks if b["type"] == kind)


def _arguments(raw: str) -> dict:
    """A tool_use block's input from its streamed JSON. A call cut off by max_tokens streams an
    unclosed object: its whole values, as the anthropic SDK's stream helper reads it (jiter)."""
    try:
        arguments = jiter.from_json(raw.encode(), partial_mode="on") if raw else {}
    except ValueError:
        return {}
    return arguments if isinstance(arguments, dict) else {}
