"""What GET /v1/jobs shows of a job, read from rq and what the worker keeps as it goes (sync; run in a thread)."""

from datetime import datetime, timezone

from rq.job import Job, JobStatus

from api import anthropic_sse
from hearth.contract import (
    ERROR,
    Event,
    events_key,
    partial_key,
    priority_of,
    progress_key,
    suspended_key,
)

STATUS = {
    JobStatus.QUEUED: "queued", JobStatus.DEFERRED: "queued", JobStatus.SCHEDULED: "queued",
    JobStatus.STARTED: "started", JobStatus.FINISHED: "finished", JobStatus.FAILED: "failed",
    JobStatus.STOPPED: "cancelled", JobStatus.CANCELED: "cancelled", JobStatus.CREATED: "queued",
}
# A background job that stepped aside for interactive work: queued again in rq, with output so far.
SUSPENDED = "suspended"
STATUSES = sorted(set(STATUS.values()) | {SUSPENDED})


def status_of(redis, job: Job, refresh: bool = True) -> str:
    status = STATUS.get(job.get_status(refresh=refresh), "queued")
    if status == "queued" and redis.exists(suspended_key(job.id)):
        return SUSPENDED
    return status


def iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.isoformat().replace("+00:00", "Z")


def requested_model(job: Job) -> str:
    return job.args[0].get("requested_model", "") if job.args else ""


def failure(job: Job, status: str) -> dict:
    """For a job that ended without an error event (it never started, or its worker died)."""
    result = job.latest_result()
    reason = result.exc_string.strip().splitlines()[-1] if result and result.exc_string else ""
    return {"type": "cancelled" if status == "cancelled" else "api_error",
            "message": f"job {job.id} {status}" + (f": {reason}" if reason else "")}


def job_view(redis, job: Job, base_url: str = "") -> dict:
    """The job as fetched: its status is not read again, so that it agrees with the times and
    result fetched with it (a job that ends in between shows as it was, not finished without an end)."""
    status = status_of(redis, job, refresh=False)
    # A resumed job's rq start time is its latest; the first is kept in its meta by the worker.
    started_at = job.meta.get("first_started_at") or iso(job.started_at)
    view = {
        "id": job.id, "type": "job", "status": status, "priority": priority_of(job.origin),
        "model": requested_model(job), "metadata": job.meta.get("metadata", {}),
        "created_at": iso(job.created_at), "started_at": started_at, "ended_at": iso(job.ended_at),
        "status_url": f"{base_url}/v1/jobs/{job.id}", "events_url": f"{base_url}/v1/jobs/{job.id}/events",
    }
    if job.meta.get("batch_id"):
        view["batch_id"], view["custom_id"] = job.meta["batch_id"], job.meta.get("custom_id")
    if job.meta.get("suspensions"):
        view["suspensions"] = job.meta["suspensions"]
    if status in ("queued", SUSPENDED):
        view["position"] = job.get_position()
    if status in ("started", SUSPENDED):
        # A few reads whatever the job's length: the worker keeps these as it goes.
        elapsed = (datetime.now(timezone.utc) - datetime.fromisoformat(started_at.replace("Z", "+00:00"))
                   ).total_seconds() if started_at else 0.0
        tokens, text, thinking = redis.mget(progress_key(job.id), partial_key(job.id, "text"),
                                            partial_key(job.id, "thinking"))
        view["progress"] = {"output_tokens": int(tokens or 0), "elapsed_seconds": round(elapsed, 3),
                            "text": (text or b"").decode(errors="replace"),
                            "thinking": (thinking or b"").decode(errors="replace")}
    elif status == "finished":
        result = job.return_value()
        view["message"] = anthropic_sse.final_message(job.id, result["model"], result["content"], result)
    elif status in ("failed", "cancelled"):
        last = redis.xrevrange(events_key(job.id), count=1)
        event = Event.from_json(last[0][1][b"e"]) if last else None
        view["error"] = event.data["error"] if event is not None and event.type == ERROR else failure(job, status)
    return view
