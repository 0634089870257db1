"""The job function: one model call, from rendered prompt to final message.

`run_message_job` is what rq runs; it is the one place that sorts a job's
outcome (finished, suspended for interactive work, cancelled, failed) and
makes sure every ending reaches the job's event stream as a terminal event.
"""

from contextlib import closing
from dataclasses import replace
import logging
import time

from rq import Queue, get_current_job
from rq.utils import utcformat

from hearth.contract import (
    BLOCK_START,
    BLOCK_STOP,
    DELTA,
    MESSAGE_END,
    QUEUE_BACKGROUND,
    QUEUE_INTERACTIVE,
    STARTED,
    GenerationRequest,
)
from workers import runtime, suspension
from workers.publisher import EventPublisher
from workers.stop_sequences import StopSequenceMatcher
from workers.stream_parser import BlockDelta, BlockStart, BlockStop, StreamParser
from workers.suspension import JobSuspended, Progress

log = logging.getLogger(__name__)

# What a model writes to end its thinking; appended for it when the budget is spent.
THINK_CLOSE_TEXT = "\n</think>\n\n"
# Steps without a publish after which the cancel flag (and the interactive queue) is read on its own.
FLAG_POLL_STEPS = 16


class JobCancelled(Exception):
    """The job was cancelled (API, client disconnect, or rq's stop-job command)."""


class PromptTooLong(ValueError):
    """The rendered prompt fills the model's context window: a bad request, not a crash."""


def run_message_job(request: dict) -> dict:
    job = get_current_job()
    rt = runtime.current()
    progress = suspension.take(job.connection, job.id)
    rt.release(job.id)
    # Only a background job watches for interactive work to step aside for.
    watch = Queue(QUEUE_INTERACTIVE, connection=job.connection).key if job.origin == QUEUE_BACKGROUND else None
    publisher = EventPublisher(job.connection, job.id, rt.settings.event_ttl, progress.seq if progress else 0, watch)
    message_job = MessageJob(rt, job.id, GenerationRequest.from_dict(request), publisher)
    try:
        return message_job.run(progress)
    except JobSuspended:
        return suspend(rt, job, message_job)
    except PromptTooLong as exc:
        publisher.publish_error("invalid_request_error", str(exc))
        raise
    except JobCancelled:
        log.info("job %s cancelled after %d events", job.id, publisher.seq)
        rt.mark_stopped(job.id)
        publisher.publish_error("cancelled", f"job {job.id} was cancelled")
        raise
    except Exception as exc:
        log.exception("job %s failed", job.id)
        publisher.publish_error("api_error", f"generation failed: {type(exc).__name__}: {exc}")
        raise
    except BaseException:
        # A cold shutdown (a second SIGTERM or Ctrl-C): tell the clients before the process goes.
        log.warning("job %s interrupted: the worker is shutting down", job.id)
        publisher.publish_error("api_error", f"the worker shut down during job {job.id}")
        raise


def suspend(rt: runtime.Runtime, job, message_job: "MessageJob"):
    """Park a background job's progress and K/V, and put it back at the front of its queue."""
    progress = message_job.progress
    progress.suspensions += 1
    suspension.save(job.connection, job.id, progress, rt.settings.event_ttl)
    # For GET /v1/jobs/{id}: rq's started_at will be the resumed run's.
    job.meta.setdefault("first_started_at", utcformat(job.started_at))
    job.meta["suspensions"] = progress.suspensions
    job.save_meta()
    rt.hold(job.id, rt.engine_for(message_job.request.model), progress.context)
    log.info("job %s suspended for interactive work after %d output tokens (event %d)",
             job.id, progress.output_tokens, progress.seq)
    return suspension.requeue_at_front()


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
    def __init__(self, rt: runtime.Runtime, job_id: str, request: GenerationRequest, publisher: EventPublisher):
        self.rt = rt
        self.job_id = job_id
        self.request = request
        self.publisher = publisher
        self.progress: Progress | None = None
        self._steps_since_publish = 0

    def begin(self, engine) -> Progress:
        prompt = engine.render(self.request)
        window = engine.context_window
        if window and len(prompt.tokens) >= window:
            raise PromptTooLong(f"prompt is {len(prompt.tokens)} tokens; the model's context window is {window}")
        parser = StreamParser(in_thinking=prompt.opens_in_thinking, thinking_enabled=self.request.enable_thinking,
                              tool_format=engine.tool_format, tools=self.request.tools)
        return Progress(context=list(prompt.tokens), prompt_tokens=len(prompt.tokens),
                        static_tokens=prompt.static_tokens, parser=parser,
                        stops=StopSequenceMatcher(self.request.stop_sequences))

    def run(self, resume: Progress | None = None) -> dict:
        """Generate the whole message, or continue a suspended job's `resume`.

        Raises JobSuspended (at a token boundary, progress kept in `self.progress`)
        when a background job should step aside for interactive work.
        """
        request = self.request
        engine = self.rt.engine_for(request.model)
        self._check_cancel(refresh=True)
        started = time.perf_counter()
        p = self.progress = resume or self.begin(engine)
        decoder = engine.decoder(p.decoder_state)
        budget = request.thinking_budget if request.enable_thinking else None
        finish_reason = None
        try:
            while finish_reason is None:
                over_budget = False
                room = request.max_tokens - p.output_tokens
                if engine.context_window:
                    # Claude Code asks for 64K tokens whatever the prompt: answer within the window.
                    room = min(room, engine.context_window - len(p.context))
                if room <= 0:
                    finish_reason = "length"
                    break
                remaining = replace(request, max_tokens=room)
                steps = engine.generate(list(p.context), remaining, on_prefill_progress=self._on_prefill_progress,
                                        static_tokens=p.static_tokens if not p.output_tokens else 0,
                                        decoder=decoder, on_cache_lookup=self._on_cache_lookup)
                with closing(steps):
                    for step in steps:
                        if not p.announced:
                            p.announced = True
                            self._publish(STARTED, usage(p.prompt_tokens, p.reused or 0, 0))
                        p.output_tokens += 1
                        if step.finish_reason != "stop":
                            p.context.append(step.token)  # a "stop" step's token is the end token
                        self.publisher.output_tokens = p.output_tokens
                        p.thinking_tokens += p.parser.in_thinking
                        self._emit(p.parser.feed(p.stops.feed(step.text)))
                        if p.stops.matched is not None:
                            finish_reason = "stop_sequence"
                            break
                        finish_reason = step.finish_reason
                        self._check_cancel()
                        if finish_reason is not None:
                            break
                        if budget and p.parser.in_thinking and p.thinking_tokens >= budget:
                            over_budget = True
                            break
                        self._check_yield()
                if over_budget:
                    # Budget spent: close thinking in the model's own context and let it answer.
                    self._emit(p.parser.close_thinking())
                    p.context += engine.encode(THINK_CLOSE_TEXT)
                elif finish_reason is None:
                    finish_reason = "length"  # the generator ran dry without saying why
        finally:
            p.decoder_state = decoder.state()
            p.elapsed += time.perf_counter() - started

        self._emit(p.parser.feed(p.stops.flush()) + p.parser.finish())
        # "capped" (the model's own answer limit) ends the turn: the client's max_tokens was not reached.
        stop_reason = {"stop_sequence": "stop_sequence", "length": "max_tokens"}.get(finish_reason, "end_turn")
        if p.parser.tool_calls and stop_reason == "end_turn":
            stop_reason = "tool_use"
        final_usage = usage(p.prompt_tokens, p.reused or 0, p.output_tokens)
        self._publish(MESSAGE_END, {"stop_reason": stop_reason, "stop_sequence": p.stops.matched, "usage": final_usage})
        log.info("job %s finished: %d prompt + %d output tokens in %.2fs (%s, %d suspensions)",
                 self.job_id, p.prompt_tokens, p.output_tokens, p.elapsed, stop_reason, p.suspensions)
        return {
            "model": request.requested_model,
            "content": p.assembler.blocks,
            "stop_reason": stop_reason,
            "stop_sequence": p.stops.matched,
            "usage": final_usage,
        }

    def _emit(self, parsed):
        for item in parsed:
            if isinstance(item, BlockStart):
                self._publish(BLOCK_START, {"index": item.index, "block": item.block})
            elif isinstance(item, BlockDelta):
                self._publish(DELTA, {"index": item.index, "delta": item.delta})
            elif isinstance(item, BlockStop):
                self._publish(BLOCK_STOP, {"index": item.index})

    def _publish(self, event_type: str, data: dict):
        self.progress.assembler.apply(self.publisher.publish(event_type, data))
        self.progress.seq = self.publisher.seq
        self._steps_since_publish = 0

    def _on_cache_lookup(self, reused: int):
        # The first lookup's figure: a resumed job finds its own earlier prefill cached.
        if self.progress.reused is None:
            self.progress.reused = reused

    def _on_prefill_progress(self, processed: int, total: int):
        # Prefill of a long prompt takes seconds: a cancel, or interactive work, must not wait for it.
        self._check_cancel(refresh=True)
        self._check_yield()

    def _check_cancel(self, refresh: bool = False):
        self._steps_since_publish += 1
        if refresh or self._steps_since_publish >= FLAG_POLL_STEPS:
            self.publisher.refresh()
            self._steps_since_publish = 0
        if self.rt.stop_requested.is_set() or self.publisher.cancel_requested:
            raise JobCancelled(self.job_id)

    def _check_yield(self):
        if self.publisher.waiting:
            raise JobSuspended(self.job_id)
