"""What Hearth is doing now, read from Redis: for the status page, `hearth status` and /metrics' gauges.

Plain Redis reads (sync; the API calls it in a thread): rq's queues and
registries, the workers' heartbeats (which say what each running job is
doing), their prompt-cache statistics, and the throughput series the workers
append to. Prompts are left out unless asked for.
"""

from collections import defaultdict
from datetime import datetime, timezone
import json
import time

from rq import Queue
from rq.job import Job, JobStatus

from hearth.contract import (
    KEY_PREFIX,
    MESSAGE_JOB,
    PRIORITIES,
    THROUGHPUT_KEY,
    WORKER_HEARTBEAT_PATTERN,
    affinity_key,
    cache_stats_key,
    priority_of,
)
from hearth.reaper import hearth_queues

CHART_SECONDS = 10 * 60
OUTCOMES = {JobStatus.FINISHED: "finished", JobStatus.FAILED: "failed", JobStatus.STOPPED: "cancelled",
            JobStatus.CANCELED: "cancelled"}


def snapshot(redis, recent: int = 12, prompts: bool = False) -> dict:
    now = time.time()
    workers = _workers(redis)
    queues = hearth_queues(redis)
    by_queue = {queue.name: _queue(queue, now) for queue in queues}
    return {
        "time": now,
        # Per priority, all models and workers together; `by_queue` has each rq queue's own.
        "queues": {priority: _merged([q for name, q in by_queue.items() if priority_of(name) == priority])
                   for priority in PRIORITIES},
        "by_queue": by_queue,
        "running": sum(len(queue.started_job_registry) for queue in queues),
        "suspended": sum(1 for _ in redis.scan_iter(match=f"{KEY_PREFIX}:suspended:*", count=500)),
        "workers": workers,
        "cache": {name: _cache(redis, name) for name in (w["name"] for w in workers)},
        "recent": _recent(redis, recent, prompts),
        "throughput": _throughput(redis, now),
        "prompts": prompts,
    }


def _queue(queue: Queue, now: float) -> dict:
    first = [job for job in Job.fetch_many(queue.get_job_ids(0, 1), connection=queue.connection) if job is not None]
    oldest = first[0].enqueued_at if first else None
    age = now - oldest.replace(tzinfo=timezone.utc).timestamp() if oldest else 0.0
    return {"depth": len(queue), "oldest_age_seconds": round(max(age, 0.0), 3)}


def _merged(queues: list) -> dict:
    return {"depth": sum(q["depth"] for q in queues),
            "oldest_age_seconds": max((q["oldest_age_seconds"] for q in queues), default=0.0)}


def _workers(redis) -> list:
    """Each live worker as its heartbeat describes it, and how many prompt prefixes it holds for routing."""
    prefix = WORKER_HEARTBEAT_PATTERN[:-1]
    out = []
    for key in sorted(redis.scan_iter(match=WORKER_HEARTBEAT_PATTERN, count=100)):
        raw = redis.get(key)
        beat = json.loads(raw) if raw else {}
        name = key.decode()[len(prefix):]
        out.append({"name": name, "pid": beat.get("pid"), "host": beat.get("host", ""),
                    "models": sorted(beat.get("models") or {}), "slots": beat.get("slots"),
                    "jobs": beat.get("jobs", []), "held_prefixes": redis.hlen(affinity_key(name))})
    return out


def _cache(redis, worker: str) -> dict:
    raw = redis.get(cache_stats_key(worker))
    models = json.loads(raw) if raw else {}
    for stats in models.values():
        prompt = stats.get("prompt_tokens") or 0
        stats["hit_rate"] = round(stats.get("reused_tokens", 0) / prompt, 3) if prompt else None
    return models


def _recent(redis, count: int, prompts: bool) -> list:
    """The last jobs to end, newest first: outcome, queue, model, tokens; and their prompt only if asked."""
    ended = []
    for queue in hearth_queues(redis):
        for registry in (queue.finished_job_registry, queue.failed_job_registry, queue.canceled_job_registry):
            ended += registry.get_job_ids(-count, -1)
    jobs = [j for j in Job.fetch_many(ended, connection=redis) if j is not None and j.func_name == MESSAGE_JOB]
    jobs.sort(key=lambda j: j.ended_at or datetime.min, reverse=True)
    out = []
    for job in jobs[:count]:
        request = job.args[0] if job.args else {}
        result = job.return_value() if job.get_status(refresh=False) == JobStatus.FINISHED else None
        entry = {"id": job.id, "queue": priority_of(job.origin), "model": request.get("requested_model", ""),
                 "outcome": OUTCOMES.get(job.get_status(refresh=False), "ended"),
                 "ended_at": job.ended_at.replace(tzinfo=timezone.utc).timestamp() if job.ended_at else None,
                 "output_tokens": (result or {}).get("usage", {}).get("output_tokens")}
        if prompts:
            entry["prompt"] = _last_user_text(request)[:200]
        out.append(entry)
    return out


def _last_user_text(request: dict) -> str:
    for message in reversed(request.get("messages", [])):
        if message.get("role") == "user" and isinstance(message.get("content"), str):
            return message["content"]
    return ""


def _throughput(redis, now: float) -> list:
    """Tokens generated per second over the last minutes, all workers together: [[second, tokens], ...]."""
    totals = defaultdict(int)
    since = int(now) - CHART_SECONDS
    for entry in redis.lrange(THROUGHPUT_KEY, 0, -1):
        second, tokens = (int(part) for part in entry.split())
        if second >= since:
            totals[second] += tokens
    return sorted(totals.items())


def summary(status: dict) -> str:
    """The snapshot for a terminal (`hearth status`)."""
    lines = []
    queues = ", ".join(f"{name} {q['depth']} queued" + (f" (oldest {q['oldest_age_seconds']:.1f}s)" if q["depth"] else "")
                       for name, q in status["queues"].items())
    lines.append(f"queues: {queues}; {status['running']} running, {status['suspended']} suspended")
    if not status["workers"]:
        lines.append("workers: none alive (start one with `hearth worker`)")
    for worker in status["workers"]:
        lines.append(f"worker {worker['name']} (pid {worker['pid']}, {', '.join(worker['models'])}): "
                     f"{len(worker['jobs'])} of {worker['slots']} slots, {worker['held_prefixes']} prompt prefixes held")
        for job in worker["jobs"]:
            lines.append(f"  {job['id'][:12]} {job['queue']:11s} {_doing(job)}")
        for model, stats in status["cache"].get(worker["name"], {}).items():
            rate = f"{stats['hit_rate']:.0%}" if stats.get("hit_rate") is not None else "-"
            lines.append(f"  cache {model}: hit rate {rate}, {stats['bytes'] / 1e6:.1f} of "
                         f"{stats['budget_bytes'] / 1e6:.0f} MB")
    recent = [(s, t) for s, t in status["throughput"] if s >= status["time"] - 60]
    lines.append(f"throughput: {sum(t for _, t in recent) / 60:.1f} tokens/s over the last minute")
    lines.append("recent jobs:")
    for job in status["recent"]:
        tokens = f"{job['output_tokens']} tokens" if job["output_tokens"] is not None else ""
        lines.append(f"  {job['id'][:12]} {job['queue']:11s} {job['outcome']:9s} {job['model']} {tokens}")
    return "\n".join(lines)


def _doing(job: dict) -> str:
    if job["phase"] == "prefilling":
        done, total = job["prefilled"]
        return f"{job['model']}: prefilling {done} of {total} tokens"
    if job["phase"] == "decoding":
        rate = f" at {job['tokens_per_second']} tokens/s" if job["tokens_per_second"] else ""
        return f"{job['model']}: decoding, {job['output_tokens']} tokens{rate}"
    return f"{job['model']}: {job['phase']}"
