"""Settings from environment variables; every one is listed in the README.

Defaults are class attributes so tests (and factories) can override any of
them with `Settings(redis_url=...)`.
"""

from dataclasses import dataclass, field, fields
import os
from pathlib import Path

BUNDLED_MODEL = str(Path(__file__).resolve().parent.parent / "models" / "hearth-tiny")


def hearth_home() -> Path:
    """Hearth's own files (the Redis `hearth up` starts, saved prompt caches)."""
    return Path(os.environ.get("HEARTH_HOME") or Path.home() / ".hearth")


def _default_cache_bytes() -> int:
    """A quarter of physical memory: the models and the OS need the rest."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4
    except (ValueError, OSError, AttributeError):
        return 4 * 1024**3


def _api_keys() -> tuple:
    keys = [os.environ.get("HEARTH_API_KEY", "")] + os.environ.get("HEARTH_API_KEYS", "").split(",")
    return tuple(k.strip() for k in keys if k.strip())


def _env(name, default, cast=str):
    value = os.environ.get(name)
    return default if value in (None, "") else cast(value)


@dataclass(frozen=True)
class Settings:
    redis_url: str = "redis://127.0.0.1:6379/0"
    # A local directory or a Hugging Face repo id, loaded with mlx_lm.load.
    model: str = BUNDLED_MODEL
    # The model for claude-haiku-* requests; empty means the main model.
    fast_model: str = ""
    # A JSON file of model-name aliases (see hearth/models.py); empty for none.
    aliases_file: str = ""
    host: str = "127.0.0.1"
    port: int = 8080
    api_workers: int = 1
    # Seconds between SSE pings while a stream has nothing else to say.
    ping_interval: float = 5.0
    # How long a stream may block on a client that does not read before it is dropped.
    send_timeout: float = 30.0
    # Kernel send buffer of each API connection (see api/gunicorn_conf.py).
    send_buffer_bytes: int = 256 * 1024
    # How long a job's event log and result stay in Redis after it ends.
    event_ttl: int = 3600
    result_ttl: int = 3600
    # rq's job timeout, in seconds; a runaway generation is failed after it.
    job_timeout: int = 3600
    # How long a non-streaming request waits for its job before giving up.
    request_timeout: float = 600.0
    # The worker's liveness key TTL; a dead worker's jobs fail within this.
    heartbeat_ttl: int = 5
    # With keys set, every endpoint but /healthz requires one (x-api-key or Bearer).
    api_keys: tuple = ()
    max_body_bytes: int = 32 * 1024 * 1024
    log_level: str = "INFO"
    # Render tools in a leading system turn, before the system prompt (Anthropic's
    # cache order), so conversations with the same tools share that prefix.
    tools_first: bool = True
    # The worker's prompt cache budget, per model, in bytes of K/V.
    cache_bytes: int = field(default_factory=_default_cache_bytes)
    # Sequences the worker decodes together (all models); 1 runs one job at a time.
    max_batch: int = 8
    # K/V the running sequences may hold, in bytes; a job that would pass it waits its turn.
    batch_bytes: int = field(default_factory=_default_cache_bytes)
    # Prompt tokens prefilled per step: running streams wait at most one chunk for a new prompt.
    prefill_chunk: int = 512
    # Where the worker saves its hottest cache entries on shutdown ("" disables).
    cache_dir: str = ""
    # This worker's name in rq and in routing; "" means the host's name (with the pid if taken).
    worker_name: str = ""
    # A job routed to the worker whose cache holds its prompt waits this long (seconds) for it,
    # then any worker serving its model may take it.
    affinity: bool = True  # route a conversation to the worker holding its prefix (off: any worker of its model)
    affinity_wait: float = 10.0
    # Jobs already waiting for a worker with no free slot beyond which the next goes to any worker.
    affinity_backlog: int = 2
    # For the reliability suite only: lets a Redis key make the worker's next generation fail.
    fault_injection: bool = False

    @property
    def fast_model_or_main(self) -> str:
        return self.fast_model or self.model

    @classmethod
    def from_env(cls, **overrides) -> "Settings":
        env = {
            "redis_url": _env("REDIS_URL", cls.redis_url),
            "model": _env("HEARTH_MODEL", cls.model),
            "fast_model": _env("HEARTH_FAST_MODEL", cls.fast_model),
            "aliases_file": _env("HEARTH_ALIASES", cls.aliases_file),
            "host": _env("HEARTH_HOST", cls.host),
            "port": _env("HEARTH_PORT", cls.port, int),
            "api_workers": _env("HEARTH_API_WORKERS", cls.api_workers, int),
            "ping_interval": _env("HEARTH_PING_INTERVAL", cls.ping_interval, float),
            "send_timeout": _env("HEARTH_SEND_TIMEOUT", cls.send_timeout, float),
            "send_buffer_bytes": _env("HEARTH_SEND_BUFFER_BYTES", cls.send_buffer_bytes, int),
            "event_ttl": _env("HEARTH_EVENT_TTL", cls.event_ttl, int),
            "result_ttl": _env("HEARTH_RESULT_TTL", cls.result_ttl, int),
            "job_timeout": _env("HEARTH_JOB_TIMEOUT", cls.job_timeout, int),
            "request_timeout": _env("HEARTH_REQUEST_TIMEOUT", cls.request_timeout, float),
            "heartbeat_ttl": _env("HEARTH_HEARTBEAT_TTL", cls.heartbeat_ttl, int),
            "max_body_bytes": _env("HEARTH_MAX_BODY_BYTES", cls.max_body_bytes, int),
            "api_keys": _api_keys(),
            "log_level": _env("HEARTH_LOG_LEVEL", cls.log_level),
            "cache_bytes": _env("HEARTH_CACHE_BYTES", _default_cache_bytes(), int),
            "max_batch": _env("HEARTH_MAX_BATCH", cls.max_batch, int),
            "batch_bytes": _env("HEARTH_BATCH_BYTES", _default_cache_bytes(), int),
            "prefill_chunk": _env("HEARTH_PREFILL_CHUNK", cls.prefill_chunk, int),
            "tools_first": _env("HEARTH_TOOLS_FIRST", cls.tools_first, lambda v: v.lower() not in ("0", "false", "no")),
            "cache_dir": os.environ.get("HEARTH_CACHE_DIR", str(hearth_home() / "prompt-cache")),
            "worker_name": _env("HEARTH_WORKER_NAME", cls.worker_name),
            "affinity": os.environ.get("HEARTH_AFFINITY", "1") != "0",
            "affinity_wait": _env("HEARTH_AFFINITY_WAIT", cls.affinity_wait, float),
            "affinity_backlog": _env("HEARTH_AFFINITY_BACKLOG", cls.affinity_backlog, int),
            "fault_injection": _env("HEARTH_FAULT_INJECTION", cls.fault_injection, lambda v: v == "1"),
        }
        env.update(overrides)
        return cls(**env)


SETTING_NAMES = [f.name for f in fields(Settings)]
