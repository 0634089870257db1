"""Hearth events → OpenAI chat-completions wire format (chunks and final completion)."""

import json
import time

from hearth.contract import BLOCK_START, DELTA, ERROR, MESSAGE_END, Event

FINISH_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls"}


def completion_id(job_id: str) -> str:
    return f"chatcmpl-{job_id}"


def openai_usage(usage: dict) -> dict:
    cached = usage.get("cache_read_input_tokens", 0)
    prompt = usage["input_tokens"] + cached
    return {"prompt_tokens": prompt, "completion_tokens": usage["output_tokens"],
            "total_tokens": prompt + usage["output_tokens"], "prompt_tokens_details": {"cached_tokens": cached}}


class ChunkFormatter:
    """Keeps what OpenAI's chunks need across events: tool-call indexes and the creation time."""

    def __init__(self, job_id: str, model: str, include_usage: bool):
        self.base = {"id": completion_id(job_id), "object": "chat.completion.chunk",
                     "created": int(time.time()), "model": model}
        self.include_usage = include_usage
        self._tool_index: dict[int, int] = {}

    def _chunk(self, delta: dict, finish_reason=None, **extra) -> dict:
        body = dict(self.base, choices=[{"index": 0, "delta": delta, "finish_reason": finish_reason}], **extra)
        return {"data": json.dumps(body, separators=(",", ":"))}

    def first(self) -> dict:
        return self._chunk({"role": "assistant", "content": ""})

    def frames(self, event: Event) -> list[dict]:
        data = event.data
        if event.type == BLOCK_START and data["block"]["type"] == "tool_use":
            index = self._tool_index.setdefault(data["index"], len(self._tool_index))
            block = data["block"]
            return [self._chunk({"tool_calls": [{"index": index, "id": block["id"], "type": "function",
                                                 "function": {"name": block["name"], "arguments": ""}}]})]
        if event.type == DELTA:
            delta = data["delta"]
            if delta["type"] == "text_delta":
                return [self._chunk({"content": delta["text"]})]
            if delta["type"] == "thinking_delta":
                return [self._chunk({"reasoning_content": delta["thinking"]})]
            if delta["type"] == "input_json_delta":
                index = self._tool_index[data["index"]]
                return [self._chunk({"tool_calls": [{"index": index, "function": {"arguments": delta["partial_json"]}}]})]
            return []
        if event.type == MESSAGE_END:
            frames = [self._chunk({}, FINISH_REASONS.get(data["stop_reason"], "stop"))]
            if self.include_usage:
                frames.append({"data": json.dumps(dict(self.base, choices=[], usage=openai_usage(data["usage"])))})
            return frames + [{"data": "[DONE]"}]
        if event.type == ERROR:
            return [{"data": json.dumps({"error": data["error"]})}, {"data": "[DONE]"}]
        return []


def completion(job_id: str, model: str, blocks: list, end: dict) -> dict:
    text = "".join(b["text"] for b in blocks if b["type"] == "text")
    reasoning = "".join(b["thinking"] for b in blocks if b["type"] == "thinking")
    calls = [{"id": b["id"], "type": "function", "function": {"name": b["name"], "arguments": json.dumps(b["input"])}}
             for b in blocks if b["type"] == "tool_use"]
    message = {"role": "assistant", "content": text or None}
    if reasoning:
        message["reasoning_content"] = reasoning
    if calls:
        message["tool_calls"] = calls
    return {"id": completion_id(job_id), "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": message,
                         "finish_reason": FINISH_REASONS.get(end["stop_reason"], "stop")}],
            "usage": openai_usage(end["usage"])}
