"""The worker-to-API contract: queue names, Redis keys, the job payload and events.

Both sides import this module; it imports neither MLX nor a web framework.
The worker turns generation into a sequence of small typed events; the API
alone knows how an Anthropic or OpenAI SSE frame looks.
"""

from dataclasses import asdict, dataclass, field
import json

# A job's priority. Listening order: a Claude Code turn never waits behind a background job.
QUEUE_INTERACTIVE = "interactive"
QUEUE_BACKGROUND = "background"
PRIORITIES = (QUEUE_INTERACTIVE, QUEUE_BACKGROUND)


# rq queues: one per priority and model (any worker serving the model takes from it) and one per
# priority and worker (jobs routed to the worker whose prompt cache holds their prefix).
def model_queue(priority: str, model_key: str) -> str:
    return f"{priority}:{model_key}"


def worker_queue(priority: str, worker_name: str) -> str:
    return f"{priority}@{worker_name}"


def priority_of(queue_name: str) -> str:
    return queue_name.split(":", 1)[0].split("@", 1)[0]


def worker_of(queue_name: str) -> str | None:
    """The worker a worker queue belongs to; None for a model queue."""
    head = queue_name.split(":", 1)[0]
    return head.split("@", 1)[1] if "@" in head else None


def is_hearth_queue(queue_name: str) -> bool:
    """Hearth's queues (the bare priorities too: the queues of Hearth before per-model routing)."""
    return priority_of(queue_name) in PRIORITIES


def listening_order(worker_name: str, model_keys) -> list[str]:
    """A worker's queues, first to last: its own, then its models', interactive before background."""
    return [name for priority in PRIORITIES
            for name in (worker_queue(priority, worker_name), *(model_queue(priority, key) for key in model_keys))]

KEY_PREFIX = "hearth"

# The job functions, by import path (the API never imports the worker's code).
MESSAGE_JOB = "workers.jobs.run_message_job"
COUNT_TOKENS_JOB = "workers.jobs.count_tokens_job"


def events_key(job_id: str) -> str:
    """The job's event log: a Redis Stream whose entry ids are `0-<seq>`."""
    return f"{KEY_PREFIX}:events:{job_id}"


def live_channel(job_id: str) -> str:
    """The job's pub/sub channel: the same events, live, at most once."""
    return f"{KEY_PREFIX}:live:{job_id}"


def cancel_key(job_id: str) -> str:
    """Set when a job is cancelled; the worker checks it before and during work."""
    return f"{KEY_PREFIX}:cancel:{job_id}"


def progress_key(job_id: str) -> str:
    """Output tokens generated so far by a running job (refreshed as it goes)."""
    return f"{KEY_PREFIX}:progress:{job_id}"


def partial_key(job_id: str, kind: str) -> str:
    """A running job's `text` or `thinking` so far, appended to as it grows (GET /v1/jobs/{id} reads it whole)."""
    return f"{KEY_PREFIX}:progress:{job_id}:{kind}"


def suspended_key(job_id: str) -> str:
    """Exists while a background job is suspended for interactive work; holds its progress (worker-private)."""
    return f"{KEY_PREFIX}:suspended:{job_id}"


def batch_key(batch_id: str) -> str:
    """A message batch: a hash of its timestamps, plus `:requests`, a list of custom_id/job id pairs."""
    return f"{KEY_PREFIX}:batch:{batch_id}"


BATCH_INDEX = f"{KEY_PREFIX}:batches"  # sorted set of batch ids by creation time


def dedupe_key(fingerprint: str) -> str:
    """The job serving a request body (per API key) while it is queued or running."""
    return f"{KEY_PREFIX}:dedupe:{fingerprint}"


def worker_heartbeat_key(worker_name: str) -> str:
    """Exists while a worker process is alive (short TTL, refreshed by a thread): JSON of what it
    serves (`models`: key -> id), its `slots`, its running `jobs` and its `host`."""
    return f"{KEY_PREFIX}:worker:{worker_name}"


def affinity_key(worker_name: str) -> str:
    """Hash of the prompt prefixes a worker's cache holds: fingerprint -> cached prompt tokens (TTL)."""
    return f"{KEY_PREFIX}:affinity:{worker_name}"


WORKER_HEARTBEAT_PATTERN = f"{KEY_PREFIX}:worker:*"


def cache_stats_key(worker_name: str) -> str:
    """JSON of the worker's prompt-cache counters per model, refreshed after each job."""
    return f"{KEY_PREFIX}:cache-stats:{worker_name}"



# The workers' counters and histograms for /metrics: a hash of `name|label=value,...` -> total
# (hearth/metrics.py), so that any API process serves the same figures.
METRICS_KEY = f"{KEY_PREFIX}:metrics"
# Tokens generated, a `<unix second> <count>` entry per worker per second, for the status page's chart.
THROUGHPUT_KEY = f"{KEY_PREFIX}:throughput"

# Read by a worker started with HEARTH_FAULT_INJECTION=1 (workers/faults.py).
FAULT_KEY = f"{KEY_PREFIX}:fault"


def stream_id(seq: int) -> str:
    """Stream entry id of event `seq`: explicit ids make Last-Event-ID a plain number."""
    return f"0-{seq}"


def seq_of(stream_entry_id) -> int:
    if isinstance(stream_entry_id, bytes):
        stream_entry_id = stream_entry_id.decode()
    return int(stream_entry_id.split("-", 1)[1])


@dataclass
class GenerationRequest:
    """Everything the worker needs to run one model call; the job's only argument.

    `messages` and `system` are already normalized by the API into the chat
    template's shape (role/content dicts); `requested_model` is echoed back.
    """

    model: str
    requested_model: str
    messages: list
    max_tokens: int
    system: str | None = None
    tools: list | None = None
    # The names of the tools the answer may call where tool_choice narrows them (Anthropic `none`: [],
    # `tool`: its one name; OpenAI's "none" and named function likewise); None: any of `tools`. The
    # template renders every one of `tools` all the same, so that a conversation's prompt, and the
    # prompt cache's prefix, stay the same whatever a turn's tool_choice.
    callable_tools: list | None = None
    # The answer must call one of them (Anthropic tool_choice any or tool; OpenAI required or a named function).
    tool_required: bool = False
    enable_thinking: bool = False
    thinking_budget: int | None = None
    # "omitted": thinking blocks carry no text (the model still thinks, within its budget).
    thinking_display: str | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    stop_sequences: list = field(default_factory=list)
    # hearth/affinity.py: the prompt's prefixes (tools, system, each message), hashed; for routing.
    fingerprints: list = field(default_factory=list)

    def tools_to_call(self) -> list:
        """The tools the answer may call, in the chat template's shape."""
        tools = self.tools or []
        if self.callable_tools is None:
            return list(tools)
        return [tool for tool in tools if tool.get("function", tool).get("name") in self.callable_tools]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "GenerationRequest":
        return cls(**data)


# Event types, in the order a job emits them:
#   started      {input_tokens, cache_read_input_tokens,      prefill done
#                 timing: {dequeued, admitted, prefilled}}    (unix seconds)
#   block_start  {index, block: {type: text|thinking|tool_use, id?, name?}}
#   delta        {index, delta: {type: text_delta|thinking_delta|signature_delta|input_json_delta, ...}}
#   block_stop   {index}
#   message_end  {stop_reason, stop_sequence, usage}            terminal: finished
#   error        {error: {type, message}}                       terminal: failed or cancelled
STARTED = "started"
BLOCK_START = "block_start"
DELTA = "delta"
BLOCK_STOP = "block_stop"
MESSAGE_END = "message_end"
ERROR = "error"
TERMINAL_EVENTS = frozenset({MESSAGE_END, ERROR})


@dataclass
class Event:
    """One sequenced event of a job. `seq` starts at 1 and has no gaps."""

    seq: int
    type: str
    data: dict

    def to_json(self) -> str:
        return json.dumps({"seq": self.seq, "type": self.type, "data": self.data}, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw) -> "Event":
        obj = json.loads(raw)
        return cls(seq=obj["seq"], type=obj["type"], data=obj["data"])

    @property
    def is_terminal(self) -> bool:
        return self.type in TERMINAL_EVENTS


def error_data(error_type: str, message: str) -> dict:
    return {"error": {"type": error_type, "message": message}}
