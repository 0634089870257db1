"""The job function: one model call, from rendered prompt to final message.

`run_message_job` is what rq runs; it is the one place that sorts a job's
outcome (finished, cancelled, failed) and makes sure every outcome reaches
the job's event stream as a terminal event.
"""

from dataclasses import replace
import logging
import time

from rq import get_current_job

from hearth.contract import (
    BLOCK_START,
    BLOCK_STOP,
    DELTA,
    ERROR,
    MESSAGE_END,
    STARTED,
    GenerationRequest,
    error_data,
)
from hearth.message import MessageAssembler
from workers import runtime
from workers.publisher import EventPublisher
from workers.stop_sequences import StopSequenceMatcher
from workers.stream_parser import BlockDelta, BlockStart, BlockStop, StreamParser

log = logging.getLogger(__name__)

# What a model writes to end its thinking; appended for it when the budget is spent.
THINK_CLOSE_TEXT = "\n</think>\n\n"
# Steps without a publish after which the cancel flag is read on its own.
CANCEL_POLL_STEPS = 16


class JobCancelled(Exception):
    """The job was cancelled (API, client disconnect, or rq's stop-job command)."""


def run_message_job(request: dict) -> dict:
    job = get_current_job()
    rt = runtime.current()
    publisher = EventPublisher(job.connection, job.id, rt.settings.event_ttl)
    try:
        return MessageJob(rt, job.id, GenerationRequest.from_dict(request), publisher).run()
    except JobCancelled:
        log.info("job %s cancelled after %d events", job.id, publisher.seq)
        rt.mark_stopped(job.id)
        publisher.publish_final(ERROR, error_data("cancelled", f"job {job.id} was cancelled"))
        raise
    except Exception as exc:
        log.exception("job %s failed", job.id)
        publisher.publish_final(ERROR, error_data("api_error", f"generation failed: {type(exc).__name__}: {exc}"))
        raise
    except BaseException:
        # A cold shutdown (a second SIGTERM or Ctrl-C): tell the clients before the process goes.
        log.warning("job %s interrupted: the worker is shutting down", job.id)
        publisher.publish_final(ERROR, error_data("api_error", f"the worker shut down during job {job.id}"))
        raise


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
        self.assembler = MessageAssembler()
        self._steps_since_publish = 0

    def run(self) -> dict:
        request = self.request
        engine = self.rt.engine_for(request.model)
        self._check_cancel(refresh=True)
        started = time.perf_counter()
        prompt = engine.render(request)
        parser = StreamParser(in_thinking=prompt.opens_in_thinking, thinking_enabled=request.enable_thinking,
                              tool_format=engine.tool_format, tools=request.tools)
        stops = StopSequenceMatcher(request.stop_sequences)
        budget = request.thinking_budget if request.enable_thinking else None
        context, output_tokens, thinking_tokens, reused = list(prompt.tokens), 0, 0, None
        finish_reason = None

        while finish_reason is None:
            segment, over_budget = [], False
            remaining = replace(request, max_tokens=request.max_tokens - output_tokens)
            for step in engine.generate(context, remaining, on_prefill_progress=self._on_prefill_progress,
                                        static_tokens=prompt.static_tokens if not output_tokens else 0):
                if reused is None:
                    reused = step.reused_tokens
                    self._publish(STARTED, usage(len(prompt.tokens), reused, 0))
                if step.finish_reason != "stop":
                    segment.append(step.token)  # a "stop" step's token is the end token
                self.publisher.output_tokens = output_tokens + len(segment)
                thinking_tokens += parser.in_thinking
                self._emit(parser.feed(stops.feed(step.text)))
                if stops.matched is not None:
                    finish_reason = "stop_sequence"
                    break
                finish_reason = step.finish_reason
                self._check_cancel()
                if budget and parser.in_thinking and thinking_tokens >= budget and finish_reason is None:
                    over_budget = True
                    break
            output_tokens += len(segment) + (finish_reason == "stop")
            if over_budget:
                # Budget spent: close thinking in the model's own context and let it answer.
                self._emit(parser.close_thinking())
                context += segment + engine.encode(THINK_CLOSE_TEXT)
            elif finish_reason is None:
                finish_reason = "length"  # the generator ran dry without saying why

        self._emit(parser.feed(stops.flush()) + parser.finish())
        # "capped" (the model's own answer limit) ends the turn: the client's max_tokens was not reached.
        stop_reason = {"stop_sequence": "stop_sequence", "length": "max_tokens"}.get(finish_reason, "end_turn")
        if parser.tool_calls and stop_reason == "end_turn":
            stop_reason = "tool_use"
        final_usage = usage(len(prompt.tokens), reused or 0, output_tokens)
        self._publish(MESSAGE_END, {"stop_reason": stop_reason, "stop_sequence": stops.matched, "usage": final_usage})
        elapsed = time.perf_counter() - started
        log.info("job %s finished: %d prompt + %d output tokens in %.2fs (%s)",
                 self.job_id, len(prompt.tokens), output_tokens, elapsed, stop_reason)
        return {
            "model": request.requested_model,
            "content": self.assembler.blocks,
            "stop_reason": stop_reason,
            "stop_sequence": stops.matched,
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
        self.assembler.apply(self.publisher.publish(event_type, data))
        self._steps_since_publish = 0

    def _on_prefill_progress(self, processed: int, total: int):
        # Prefill of a long prompt takes seconds: a cancel must not wait for it.
        self._check_cancel(refresh=True)

    def _check_cancel(self, refresh: bool = False):
        self._steps_since_publish += 1
        if refresh or self._steps_since_publish >= CANCEL_POLL_STEPS:
            self.publisher.refresh_cancel()
            self._steps_since_publish = 0
        if self.rt.stop_requested.is_set() or self.publisher.cancel_requested:
            raise JobCancelled(self.job_id)
