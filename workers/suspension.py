"""Suspending a background job for interactive work, and resuming it where it stopped.

A background job that sees interactive jobs waiting (the publisher reads the
interactive queue's length on every event's round trip) stops at a token
boundary and returns rq's `Retry`, which puts it back at the front of the
background queue: rq's registries show it queued, never lost, never running
twice. Its progress (the tokens so far, the parser's state, the event
sequence) waits in Redis, its K/V in the prompt cache, pinned. When it runs
again it continues from there: no token is generated twice, and its event
stream goes on with the next sequence number.
"""

from dataclasses import dataclass, field
import pickle

from rq import Retry

from hearth.contract import suspended_key
from hearth.message import MessageAssembler
from workers.stop_sequences import StopSequenceMatcher
from workers.stream_parser import StreamParser

# rq counts each suspension as a retry; this only bounds a runaway loop.
MAX_SUSPENSIONS = 100_000


class JobSuspended(Exception):
    """Interactive work is waiting: the background job steps aside."""


@dataclass
class Progress:
    """Everything a job has done so far that its continuation needs."""

    context: list  # prompt tokens, then each generated token (and any forced end of thinking)
    prompt_tokens: int
    static_tokens: int
    parser: StreamParser
    stops: StopSequenceMatcher
    assembler: MessageAssembler = field(default_factory=MessageAssembler)
    output_tokens: int = 0
    thinking_tokens: int = 0
    reused: int | None = None  # prompt tokens the first cache lookup found
    announced: bool = False  # the `started` event is out
    seq: int = 0  # the last event published
    decoder_state: dict = field(default_factory=dict)  # the detokenizer's, text held back included
    elapsed: float = 0.0  # seconds of work before this run
    suspensions: int = 0
    opens_in_thinking: bool = False  # the prompt left `<think>` open (for the tool-call guide)


def save(redis, job_id: str, progress: Progress, ttl: int):
    redis.set(suspended_key(job_id), pickle.dumps(progress), ex=ttl)


def take(redis, job_id: str) -> Progress | None:
    """The progress of a suspended job, removed from Redis (None for a fresh job)."""
    raw = redis.getdel(suspended_key(job_id))
    return pickle.loads(raw) if raw else None


def requeue_at_front() -> Retry:
    """What the job function returns to be put back at the front of its queue."""
    return Retry(max=MAX_SUSPENSIONS, enqueue_at_front=True)
