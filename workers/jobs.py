"""One Messages job, from its request to its final message, one token at a time.

The scheduler (workers/scheduler.py) runs the model for many jobs at once
and hands each job the tokens of its own sequence. A MessageJob turns them
into text, thinking and tool-call blocks, applies its stop sequences,
thinking budget and limits, and stages its events. `settle` is the one
place that sorts how a job ended (finished, suspended for interactive work,
cancelled, failed) and makes sure every ending reaches the job's event
stream as a terminal event.

rq knows a message job by `run_message_job`, the function the API enqueues;
Hearth's worker runs such jobs in its batch instead of calling it.
"""

from dataclasses import dataclass
import logging
import time

from rq.utils import utcformat

from hearth.contract import BLOCK_START, BLOCK_STOP, DELTA, MESSAGE_END, STARTED, GenerationRequest
from workers import runtime, suspension
from workers.publisher import EventPublisher
from workers.stop_sequences import StopSequenceMatcher
from workers.stream_parser import BlockDelta, BlockStart, BlockStop, StreamParser
from workers.suspension import JobSuspended, Progress

log = logging.getLogger(__name__)

# What a model writes to end its thinking; appended for it when the budget is spent.
THINK_CLOSE_TEXT = "\n</think>\n\n"


class JobCancelled(Exception):
    """The job was cancelled (API, client disconnect, or rq's stop-job command)."""


class PromptTooLong(ValueError):
    """The rendered prompt fills the model's context window: a bad request, not a crash."""


@dataclass
class Segment:
    """What the model is asked for next: prefill `tokens`, then generate at most `max_tokens`."""

    tokens: list
    max_tokens: int
    static_tokens: int = 0
    guide: object = None  # a first segment's tool-call guide (workers/tool_guide.py)


@dataclass
class Done:
    """The message is complete; `result` is what rq keeps."""

    result: dict


def run_message_job(request: dict) -> dict:
    raise RuntimeError("message jobs are decoded in batches by `hearth worker`, not called one by one")


def count_tokens_job(request: dict) -> dict:
    """POST /v1/messages/count_tokens: the exact prompt a generation would prefill, counted."""
    rt = runtime.current()
    job_request = GenerationRequest.from_dict(request)
    return {"input_tokens": len(rt.engine_for(job_request.model).render(job_request).tokens)}


def usage(prompt_tokens: int, reused: int, output_tokens: int) -> dict:
    """Anthropic's accounting: `input_tokens` are the ones actually prefilled."""
    return {"input_tokens": prompt_tokens - reused, "output_tokens": output_tokens,
            "cache_read_input_tokens": reused}


class MessageJob:
    def __init__(self, job_id: str, request: GenerationRequest, engine, publisher: EventPublisher,
                 resume: Progress | None = None, meter=None):
        self.job_id = job_id
        self.meter = meter  # hearth.metrics.JobMeter, or None
        self.request = request
        self.engine = engine
        self.publisher = publisher
        self.progress = resume or self._begin()
        self.decoder = engine.decoder(self.progress.decoder_state)
        self._since = time.perf_counter()
        # When the worker took the job and admitted it (unix seconds), for the `started` event.
        self.timing: dict = {}
        self._offered = {tool.get("function", tool).get("name") for tool in request.tools_to_call()}
        self._budget = self._thinking_budget()  # once: on_output runs for every token

    def _begin(self) -> Progress:
        prompt = self.engine.render(self.request)
        window = self.engine.context_window
        if window and len(prompt.tokens) >= window:
            raise PromptTooLong(f"prompt is {len(prompt.tokens)} tokens; the model's context window is {window}")
        parser = StreamParser(in_thinking=prompt.opens_in_thinking, thinking_enabled=self.request.enable_thinking,
                              tool_format=self.engine.tool_format, tools=self.request.tools_to_call())
        return Progress(context=list(prompt.tokens), prompt_tokens=len(prompt.tokens),
                        static_tokens=prompt.static_tokens, parser=parser,
                        stops=StopSequenceMatcher(self.request.stop_sequences),
                        opens_in_thinking=prompt.opens_in_thinking)

    def first_segment(self) -> Segment | Done:
        """The prompt to start from: the rendered one, or everything so far for a resumed job."""
        room = self._room()
        if room <= 0:
            return self._finish("length")
        return self._whole_context(room)

    def _whole_context(self, room: int) -> Segment:
        p = self.progress
        guide = self.engine.tool_guide(self.request, p.opens_in_thinking)
        if guide is not None:
            guide.inserted(p.context[p.prompt_tokens:])  # the output so far
        return Segment(list(p.context), room, p.static_tokens if not p.output_tokens else 0, guide)

    def on_output(self, output) -> Segment | Done | None:
        """One output of this job's sequence. Returns what the sequence does next: None (go on),
        a Segment to push into it (thinking closed by its budget) or, its sequence ended, to start
        it again with (thinking closed after an end of turn inside it), or Done."""
        p = self.progress
        if output.reused is not None and p.reused is None:
            p.reused = output.reused  # the first lookup's: a resumed job finds its own prefill cached
        if not p.announced and (output.token is not None or output.prefilled[0] >= output.prefilled[1]):
            # The prompt is prefilled: its usage is known before the first token.
            p.announced = True
            self._stage(STARTED, dict(usage(p.prompt_tokens, p.reused or 0, 0),
                                      timing=dict(self.timing, prefilled=time.time())))
            if self.meter:
                self.meter.prefilled(p.prompt_tokens, p.reused or 0)
        if output.token is None:
            return None
        p.output_tokens += 1
        if self.meter:
            self.meter.token()
        self.publisher.output_tokens = p.output_tokens
        finish = output.finish
        # The end token is not text; every other token is, the last one included.
        text = "" if finish == "stop" else self.decoder.add(output.token)
        if finish != "stop":
            p.context.append(output.token)
        if finish is not None:
            text += self.decoder.flush()
        p.thinking_tokens += p.parser.in_thinking
        self._emit(p.parser.feed(p.stops.feed(text)))
        if p.stops.matched is not None:
            return self._finish("stop_sequence")
        if p.parser.ended:
            return self._finish("stop")  # the model went on after its tool calls: the turn ends at them
        if finish == "stop" and p.parser.in_thinking:
            # An end of turn inside its thinking: a reply of thinking alone shows nothing (`claude -p`
            # prints an empty line). Not one of its tokens; thinking is closed and the model answers.
            log.info("job %s ended its turn inside its thinking: thinking closed, the model answers", self.job_id)
            p.output_tokens -= 1
            return self._close_thinking(ended=True)
        if finish is not None:
            return self._finish(finish)
        if self._budget and p.parser.in_thinking and p.thinking_tokens >= self._budget:
            return self._close_thinking()
        return None

    def _thinking_budget(self) -> int | None:
        """The request's budget; under the model's own cap, at most three quarters of that cap:
        an answer capped inside its thinking shows nothing (Claude Code then asks again, and again)."""
        if not self.request.enable_thinking:
            return None
        budget = self.request.thinking_budget
        if self.engine.max_new_tokens:
            share = self.engine.max_new_tokens * 3 // 4
            budget = min(budget, share) if budget else share
        return budget

    def _close_thinking(self, ended: bool = False) -> Segment | Done:
        """Close thinking in the model's own context and let it answer: its budget is spent, or
        it `ended` its turn there (its sequence is over: it starts again from everything so far,
        which the prompt cache holds; if it ends again at once, the answer guard takes that back)."""
        self._emit(self.progress.parser.close_thinking())
        forced = self.engine.encode(THINK_CLOSE_TEXT)
        self.progress.context += forced
        room = self._room()
        if room <= 0:
            return self._finish("length")
        return self._whole_context(room) if ended else Segment(forced, room)

    def _room(self) -> int:
        """Tokens this answer may still have: the client's max_tokens, the context window, the model's own cap."""
        p = self.progress
        room = self.request.max_tokens - p.output_tokens
        if self.engine.context_window:
            # Claude Code asks for 64K tokens whatever the prompt: answer within the window.
            room = min(room, self.engine.context_window - len(p.context))
        if self.engine.max_new_tokens:
            room = min(room, self.engine.max_new_tokens - p.output_tokens)
        return room

    def _finish(self, finish_reason: str) -> Done:
        p = self.progress
        self._emit(p.parser.feed(p.stops.flush()) + p.parser.finish(cut_off=finish_reason == "length"))
        if finish_reason == "length" and p.output_tokens < self.request.max_tokens and not self._window_full():
            # The model's own cap (generation_config.json), not the client's limit: Claude Code
            # treats max_tokens as an error, so the turn just ends.
            log.info("job %s: answer capped at %d tokens by %s's generation_config.json",
                     self.job_id, p.output_tokens, self.engine.name)
            finish_reason = "stop"
        self._log_mistakes()
        if p.parser.cut_call:
            # Whichever cap cut it, a call cut short is not to be run: Anthropic's own shape for it.
            stop_reason = "max_tokens"
        elif p.parser.tool_calls:
            stop_reason = "tool_use"  # the message ends with its tool calls: agents loop on this
        else:
            stop_reason = {"stop_sequence": "stop_sequence", "length": "max_tokens"}.get(finish_reason, "end_turn")
        matched = p.stops.matched if stop_reason == "stop_sequence" else None
        final_usage = usage(p.prompt_tokens, p.reused or 0, p.output_tokens)
        self._stage(MESSAGE_END, {"stop_reason": stop_reason, "stop_sequence": matched, "usage": final_usage})
        self.pause()
        log.info("job %s finished: %d prompt + %d output tokens in %.2fs (%s, %d suspensions)",
                 self.job_id, p.prompt_tokens, p.output_tokens, p.elapsed, stop_reason, p.suspensions)
        return Done({
            "model": self.request.requested_model,
            "content": p.assembler.blocks,
            "stop_reason": stop_reason,
            "stop_sequence": matched,
            "usage": final_usage,
        })

    def _log_mistakes(self):
        """What the model got wrong of its own format, which the client never sees as such."""
        parser = self.progress.parser
        if parser.garbled_calls:
            log.warning("job %s: %d tool call(s) did not parse and were returned as text",
                        self.job_id, parser.garbled_calls)
        if parser.cut_call:
            log.warning("job %s: a token cap cut its last tool call short; it ends as a tool_use as far as it "
                        "went, with stop_reason max_tokens", self.job_id)
        if parser.dropped:
            log.info("job %s: the turn ends at its tool call; %d characters written after it were dropped",
                     self.job_id, parser.dropped)

    def _window_full(self) -> bool:
        window = self.engine.context_window
        return bool(window) and len(self.progress.context) >= window

    def pause(self):
        """Bank the time worked and the detokenizer's state (for a suspension's continuation)."""
        now = time.perf_counter()
        self.progress.elapsed += now - self._since
        self._since = now
        self.progress.decoder_state = self.decoder.state()

    def _emit(self, parsed):
        for item in parsed:
            if isinstance(item, BlockStart):
                if item.block["type"] == "tool_use" and item.block["name"] not in self._offered:
                    # Passed on all the same: Claude Code answers it with an error result.
                    log.warning("job %s: the model called %r, a tool the request did not offer",
                                self.job_id, item.block["name"])
                self._stage(BLOCK_START, {"index": item.index, "block": item.block})
            elif isinstance(item, BlockDelta):
                if item.delta["type"] == "thinking_delta" and self.request.thinking_display == "omitted":
                    continue
                self._stage(DELTA, {"index": item.index, "delta": item.delta})
            elif isinstance(item, BlockStop):
                self._stage(BLOCK_STOP, {"index": item.index})

    def _stage(self, event_type: str, data: dict):
        self.progress.assembler.apply(self.publisher.stage(event_type, data))
        self.progress.seq = self.publisher.seq


def settle(rt: runtime.Runtime, job, message_job: MessageJob | None, publisher: EventPublisher, outcome):
    """Sort how a job ended and tell its clients; returns what rq records: a result, rq's Retry, or the exception.

    `outcome` is the job's result (a dict), JobSuspended, or the exception that ended it.
    """
    if isinstance(outcome, dict):
        return outcome
    if isinstance(outcome, JobSuspended):
        return suspend(rt, job, message_job)
    if isinstance(outcome, PromptTooLong):
        publisher.publish_error("invalid_request_error", str(outcome))
    elif isinstance(outcome, JobCancelled):
        log.info("job %s cancelled after %d events", job.id, publisher.seq)
        publisher.publish_error("cancelled", f"job {job.id} was cancelled")
    elif isinstance(outcome, Exception):
        log.error("job %s failed", job.id, exc_info=outcome)
        publisher.publish_error("api_error", f"generation failed: {type(outcome).__name__}: {outcome}")
    else:
        # A cold shutdown (a second SIGTERM or Ctrl-C): tell the clients before the process goes.
        log.warning("job %s interrupted: the worker is shutting down", job.id)
        publisher.publish_error("api_error", f"the worker shut down during job {job.id}")
    return outcome


def suspend(rt: runtime.Runtime, job, message_job: MessageJob):
    """Park a background job's progress and K/V, and put it back at the front of its queue."""
    message_job.pause()
    progress = message_job.progress
    progress.suspensions += 1
    suspension.save(job.connection, job.id, progress, rt.settings.event_ttl)
    # For GET /v1/jobs/{id}: rq's started_at will be the resumed run's.
    job.meta.setdefault("first_started_at", utcformat(job.started_at))
    job.meta["suspensions"] = progress.suspensions
    job.save_meta()
    rt.hold(job.id, message_job.engine, progress.context)
    log.info("job %s suspended for interactive work after %d output tokens (event %d)",
             job.id, progress.output_tokens, progress.seq)
    return suspension.requeue_at_front()
