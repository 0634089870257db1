"""Hearth events → Anthropic Messages wire format (SSE frames and final Message).

Anthropic's order: message_start, then per block content_block_start,
content_block_delta…, content_block_stop, then message_delta and
message_stop; `ping` may come anywhere; an `error` event ends a failed stream.
"""

import json

from hearth.contract import BLOCK_START, BLOCK_STOP, DELTA, ERROR, MESSAGE_END, STARTED, Event


def message_id(job_id: str) -> str:
    return f"msg_{job_id}"


def _frame(event_type: str, data: dict, seq: int | None = None) -> dict:
    frame = {"event": event_type, "data": json.dumps(data, separators=(",", ":"))}
    if seq is not None:
        frame["id"] = str(seq)  # a reconnecting client resumes after it (Last-Event-ID)
    return frame


def message_start(job_id: str, model: str, usage: dict | None = None) -> dict:
    """`usage`: the job's `started` event data, once the prompt is counted (else zeros)."""
    usage = usage or {}
    return _frame("message_start", {"type": "message_start", "message": {
        "id": message_id(job_id), "type": "message", "role": "assistant", "model": model,
        "content": [], "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": usage.get("input_tokens", 0), "output_tokens": 0,
                  "cache_creation_input_tokens": 0,
                  "cache_read_input_tokens": usage.get("cache_read_input_tokens", 0)},
    }})


def ping() -> dict:
    return _frame("ping", {"type": "ping"})


def error_frame(error: dict, seq: int | None = None) -> dict:
    return _frame("error", {"type": "error", "error": error}, seq)


def frames(event: Event) -> list[dict]:
    """The SSE frames for one Hearth event (none for `started`)."""
    data, seq = event.data, event.seq
    if event.type == BLOCK_START:
        return [_frame("content_block_start", {"type": "content_block_start", "index": data["index"],
                                               "content_block": data["block"]}, seq)]
    if event.type == DELTA:
        return [_frame("content_block_delta", {"type": "content_block_delta", "index": data["index"],
                                               "delta": data["delta"]}, seq)]
    if event.type == BLOCK_STOP:
        return [_frame("content_block_stop", {"type": "content_block_stop", "index": data["index"]}, seq)]
    if event.type == MESSAGE_END:
        delta = {"type": "message_delta",
                 "delta": {"stop_reason": data["stop_reason"], "stop_sequence": data["stop_sequence"]},
                 "usage": data["usage"]}
        return [_frame("message_delta", delta, seq), _frame("message_stop", {"type": "message_stop"}, seq)]
    if event.type == ERROR:
        return [error_frame(data["error"], seq)]
    if event.type == STARTED:
        return []
    raise ValueError(f"unknown event type {event.type!r}")


def final_message(job_id: str, model: str, content: list, end: dict) -> dict:
    """The non-streaming response body, from the assembled blocks and the message_end event."""
    return {
        "id": message_id(job_id), "type": "message", "role": "assistant", "model": model,
        "content": content, "stop_reason": end["stop_reason"], "stop_sequence": end["stop_sequence"],
        "usage": dict({"cache_creation_input_tokens": 0}, **end["usage"]),
    }
