"""Many jobs decoding at once in the one worker: slots, admission, and the step loop.

The worker (workers/worker.py) dequeues jobs with rq and admits them here
while there is room: a slot (`max_batch` sequences, all models together)
and K/V memory (`batch_bytes`). Each step then

1. runs one batched model call per model that has sequences: a token for
   each sequence decoding, a prefill chunk for prompts arriving (so a long
   prompt never freezes the others for more than a chunk);
2. hands every job its own outputs (text, blocks, stop sequences, budget);
3. publishes every job's events in one Redis round trip, which also reads
   every job's cancel flag and the queues' lengths;
4. ends what has ended, stops what was cancelled, and when interactive work
   waits for a slot (or for memory) that background jobs hold, suspends
   enough of them, newest first.

rq sees each job: in its started registry while it holds a slot, then in
exactly one terminal registry (or back at the front of its queue when
suspended), through the worker's `Outcomes`.
"""

from dataclasses import dataclass
import logging
import time
from typing import Protocol

from rq.timeouts import JobTimeoutException

from hearth.contract import QUEUE_INTERACTIVE, GenerationRequest, priority_of
from hearth.metrics import JobMeter, Tally
from hearth.models import model_key
from workers import suspension
from workers.jobs import Done, JobCancelled, MessageJob, Segment, settle
from workers.publisher import COALESCE_SECONDS, EventPublisher, flush
from workers.sampling import Sampling
from workers.suspension import JobSuspended

log = logging.getLogger(__name__)

# Cancel flags and the queues' lengths ride on a step's round trip this often (seconds); rq's
# stop-job command (which the API's cancel sends too) reaches a running job at its next step anyway.
FLAG_READ_SECONDS = 0.01
# A new sequence is expected to grow by this many tokens when its K/V is weighed for admission.
ADMISSION_HEADROOM_TOKENS = 256


class Outcomes(Protocol):
    """How rq learns that a job ended: the worker's side."""

    def finished(self, run: "Running", value): ...  # a result, or rq's Retry for a suspension
    def failed(self, run: "Running", error: BaseException, stopped: bool): ...


@dataclass(eq=False)
class Running:
    """A job holding a slot."""

    job: object  # rq Job
    queue: object  # rq Queue
    execution: object  # rq Execution
    publisher: EventPublisher
    model: str
    admitted: float  # time.monotonic()
    message: MessageJob | None = None
    done: Done | None = None
    prefilled: tuple = (0, 0)  # prompt tokens processed, of
    first_token_at: float | None = None  # time.monotonic()

    @property
    def priority(self) -> str:
        return priority_of(self.job.origin)

    @property
    def interactive(self) -> bool:
        return self.priority == QUEUE_INTERACTIVE


class Scheduler:
    def __init__(self, rt, connection, outcomes: Outcomes, queue_keys: dict, held_prefixes=None):
        self.rt = rt
        self.connection = connection
        self.outcomes = outcomes
        self.held_prefixes = held_prefixes  # workers/affinity.py: what each ended job's prompt left cached
        self.max_batch = max(1, rt.settings.max_batch)
        self.budget_bytes = rt.settings.batch_bytes
        # Queue name -> its Redis list, whose length each round trip reads.
        self.queue_keys = dict(queue_keys)
        self.queued = {name: 0 for name in self.queue_keys}
        self.batches = {name: self._new_batch(engine) for name, engine in rt.engines.items()}
        self.running: dict[str, Running] = {}
        self.waiting_for_memory: list[Running] = []
        # Job ids rq's stop-job command named (set from the worker's pub/sub thread).
        self.stop_requested: set = set()
        self._flags_read = self._flushed = 0.0
        self.tally = Tally()  # this worker's metrics since the last round trip (hearth/metrics.py)
        self._warned_over_budget = False

    def _new_batch(self, engine):
        return engine.batch(self.max_batch, self.rt.settings.prefill_chunk)

    @property
    def busy(self) -> bool:
        return bool(self.running)

    def has_room(self) -> bool:
        return len(self.running) < self.max_batch and not self.waiting_for_memory

    def job_ids(self) -> list:
        return list(self.running)

    def describe(self) -> list:
        """What each running job is doing, for the status page (called from the heartbeat thread)."""
        now = time.monotonic()
        out = []
        for run in list(self.running.values()):
            tokens = run.message.progress.output_tokens if run.message else 0
            if run in self.waiting_for_memory:
                phase = "waiting for memory"
            elif run.first_token_at is None:
                phase = "prefilling"
            else:
                phase = "decoding"
            elapsed = now - run.first_token_at if run.first_token_at else 0.0
            out.append({"id": run.job.id, "model": model_key(run.model), "queue": run.priority, "phase": phase,
                        "prefilled": list(run.prefilled), "output_tokens": tokens,
                        "tokens_per_second": round(tokens / elapsed, 1) if elapsed > 0.5 else None})
        return out

    def admit(self, job, queue, execution, dequeued_at: float | None = None):
        """Take a job that rq has just started: render it and give it a sequence (or a place in line for memory)."""
        progress = suspension.take(self.connection, job.id)
        self.rt.release(job.id)
        publisher = EventPublisher(self.connection, job.id, self.rt.settings.event_ttl, progress.seq if progress else 0)
        run = Running(job, queue, execution, publisher, model="", admitted=time.monotonic())
        self.running[job.id] = run
        try:
            publisher.refresh()  # a cancel that raced the dequeue
            if publisher.cancel_requested:
                raise JobCancelled(job.id)
            request = GenerationRequest.from_dict(job.args[0])
            run.model = self.rt.model_name(request.model)
            enqueued = job.enqueued_at.timestamp() if job.enqueued_at else time.time()
            if progress is None:
                self.tally.observe("hearth_queue_wait_seconds", (dequeued_at or time.time()) - enqueued,
                                   queue=run.priority)
            meter = JobMeter(self.tally, model_key(run.model), run.priority, enqueued, resumed=progress is not None)
            run.message = MessageJob(job.id, request, self.rt.engines[run.model], publisher, progress, meter)
            self._start(run)
            run.message.timing = {"dequeued": dequeued_at or time.time(), "admitted": time.time()}
        except Exception as exc:  # noqa: BLE001 - sorted by settle()
            self._end(run, exc)
        except BaseException as exc:
            self._end(run, exc)
            raise

    def step(self):
        """One step for every running sequence, then one round trip to Redis, then what follows from it."""
        try:
            outputs = []
            for name, batch in list(self.batches.items()):
                if len(batch):
                    outputs += self._step_model(name, batch)
            for output in outputs:
                run = self.running.get(output.key)
                if run is not None and run.done is None:
                    self._guarded(run, self._feed, run, output)
            self._flush()
            self._settle_ended()
            self._make_room()
            self._admit_waiting_for_memory()
        except Exception as exc:  # Redis gone for good, or a bug: no client is left hanging
            log.exception("a step failed: ending its %d jobs", len(self.running))
            self.abort(exc)
        except BaseException as exc:
            # A cold shutdown: every client hears why before the process goes.
            self.abort(exc)
            raise

    def abort(self, error: BaseException):
        """End every job with `error`, each as far as Redis allows."""
        for run in list(self.running.values()):
            try:
                self._end(run, error)
            except Exception:  # the next job must still be told
                log.warning("job %s: could not record its end", run.job.id, exc_info=True)

    def _step_model(self, name: str, batch) -> list:
        try:
            return batch.step()
        except Exception as exc:  # an MLX failure (say, out of memory) fails the step
            log.error("model %s: a batched step failed; its %d jobs fail with it", name, len(batch), exc_info=exc)
            self.batches[name] = self._new_batch(self.rt.engine_for(name))
            for run in [r for r in self.running.values() if r.model == name and r not in self.waiting_for_memory]:
                self._end(run, exc, in_batch=False)
            return []

    def _start(self, run: Running):
        segment = run.message.first_segment()
        if isinstance(segment, Done):
            run.done = segment
        elif self._fits(run, segment):
            self._add(run, segment)
        else:
            log.info("job %s waits for K/V memory (%d tokens)", run.job.id, len(segment.tokens))
            self.waiting_for_memory.append(run)

    def _add(self, run: Running, segment: Segment):
        sampling = Sampling.for_request(run.message.request)
        self.batches[run.model].add(run.job.id, segment.tokens, sampling, segment.max_tokens, segment.static_tokens,
                                    segment.guide)

    def _fits(self, run: Running, segment: Segment) -> bool:
        if not any(len(batch) for batch in self.batches.values()):
            return True  # alone, a job always runs (as it would with one slot)
        target = self.batches[run.model]
        others = sum(batch.nbytes for batch in self.batches.values() if batch is not target)
        return others + target.nbytes_with(len(segment.tokens) + ADMISSION_HEADROOM_TOKENS) <= self.budget_bytes

    def _nbytes(self) -> int:
        return sum(batch.nbytes for batch in self.batches.values())

    def _feed(self, run: Running, output):
        if output.prefilled:
            run.prefilled = output.prefilled
        elif run.first_token_at is None:
            run.first_token_at = time.monotonic()
        after = run.message.on_output(output)
        if isinstance(after, Segment):
            if run.job.id in self.batches[run.model]:
                self.batches[run.model].extend(run.job.id, after.tokens, after.max_tokens)
            else:
                self._add(run, after)  # its sequence had ended: it starts again
        elif isinstance(after, Done):
            run.done = after
            if run.job.id in self.batches[run.model]:
                self.batches[run.model].remove(run.job.id)  # a stop sequence: the model would go on

    def _guarded(self, run: Running, action, *args):
        try:
            action(*args)
        except Exception as exc:  # noqa: BLE001 - sorted by settle()
            self._end(run, exc)

    def _flush(self):
        """Send what the jobs staged: at once if a block starts or ends, else deltas every COALESCE_SECONDS."""
        publishers = [run.publisher for run in self.running.values()]
        now = time.monotonic()
        read_flags = now - self._flags_read >= FLAG_READ_SECONDS
        due = now - self._flushed >= COALESCE_SECONDS and any(p.pending for p in publishers)
        if not (read_flags or due or any(p.urgent for p in publishers)):
            return
        lengths = flush(self.connection, publishers, tuple(self.queue_keys.values()), read_flags, self.tally)
        self._flushed = now
        if read_flags:
            self.queued = dict(zip(self.queue_keys, lengths))
            self._flags_read = now

    def _settle_ended(self):
        now = time.monotonic()
        for run in list(self.running.values()):
            if run.done is not None:
                self._end(run, run.done.result)
            elif run.job.id in self.stop_requested or run.publisher.cancel_requested:
                self._end(run, JobCancelled(run.job.id))
            elif run.job.timeout and run.job.timeout > 0 and now - run.admitted > run.job.timeout:
                self._end(run, JobTimeoutException(f"Task exceeded maximum timeout value ({run.job.timeout} seconds)"))

    def _make_room(self):
        """Interactive work waits for a slot or for memory that background jobs hold: suspend enough of them."""
        free = self.max_batch - len(self.running)
        short = sum(n for name, n in self.queued.items() if priority_of(name) == QUEUE_INTERACTIVE) - free
        if any(r.interactive for r in self.waiting_for_memory) or self._nbytes() > self.budget_bytes:
            short = max(short, 1)
        if short <= 0:
            return
        background = [r for r in self.running.values() if not r.interactive and r.done is None]
        for run in background[::-1][:short]:
            self._end(run, JobSuspended(run.job.id))
        if self._nbytes() > self.budget_bytes and not background and not self._warned_over_budget:
            self._warned_over_budget = True
            log.warning("the running interactive jobs hold %d bytes of K/V, over HEARTH_BATCH_BYTES=%d",
                        self._nbytes(), self.budget_bytes)

    def _admit_waiting_for_memory(self):
        for run in sorted(self.waiting_for_memory, key=lambda r: not r.interactive):
            segment = run.message.first_segment()
            if isinstance(segment, Done) or self._fits(run, segment):
                self.waiting_for_memory.remove(run)
                self._guarded(run, self._start, run)
            else:
                return  # in order: a big job is not overtaken forever by small ones

    def flush_metrics(self):
        """The tally's last counts, when the worker goes idle (running jobs send theirs every step)."""
        self.tally.close_second(now=True)
        if self.tally:
            pipe = self.connection.pipeline(transaction=False)
            self.tally.queue(pipe)
            pipe.execute()
            self.tally.clear()

    def _count(self, run: Running, outcome):
        model = model_key(run.model) if run.model else "unknown"
        if isinstance(outcome, JobSuspended):
            self.tally.add("hearth_suspensions_total", model=model)
            return
        kind = "finished" if isinstance(outcome, dict) else "cancelled" if isinstance(outcome, JobCancelled) else "failed"
        self.tally.add("hearth_jobs_total", queue=run.priority, model=model, outcome=kind)

    def _end(self, run: Running, outcome, in_batch: bool = True):
        """The one way out of a slot: the sequence's K/V back to the cache, then rq and the clients told."""
        self.running.pop(run.job.id, None)
        self.stop_requested.discard(run.job.id)
        if run in self.waiting_for_memory:
            self.waiting_for_memory.remove(run)
        batch = self.batches.get(run.model)
        if in_batch and batch is not None:
            if run.job.id in batch:
                batch.remove(run.job.id)  # a sequence that finished by itself is out already
            if self.held_prefixes is not None and run.message is not None:
                progress = run.message.progress
                self.held_prefixes.record(run.message.request.fingerprints, batch.prompt_cache,
                                          progress.context[:progress.prompt_tokens])
        if run.publisher.pending and isinstance(outcome, (dict, Exception)):
            # What it made goes out before rq hears of its end (a suspended job's progress is parked
            # at its last event); on a cold shutdown there is no time, and its error event follows the log.
            try:
                flush(self.connection, [run.publisher])
            except Exception:  # its error event, appended after the log's last, still follows
                if isinstance(outcome, JobSuspended):
                    raise
        value = settle(self.rt, run.job, run.message, run.publisher, outcome)
        self._count(run, outcome)
        if isinstance(value, BaseException):
            self.outcomes.failed(run, value, stopped=isinstance(value, JobCancelled))
        else:
            self.outcomes.finished(run, value)
