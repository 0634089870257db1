"""What GET /v1/jobs shows of a job, read from rq and the job's event log (sync; run in a thread)."""

from datetime import datetime, timezone

from rq.job import Job, JobStatus

from api import anthropic_sse
from hearth.contract import ERROR, MESSAGE_END, Event, events_key, progress_key
from hearth.message import MessageAssembler

STATUS = {
    JobStatus.QUEUED: "queued", JobStatus.DEFERRED: "queued", JobStatus.SCHEDULED: "queued",
    JobStatus.STARTED: "started", JobStatus.FINISHED: "finished", JobStatus.FAILED: "failed",
    JobStatus.STOPPED: "cancelled", JobStatus.CANCELED: "cancelled", JobStatus.CREATED: "queued",
}
STATUSES = sorted(set(STATUS.values()))


def iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.isoformat().replace("+00:00", "Z")


def requested_model(job: Job) -> str:
    return job.args[0].get("requested_model", "") if job.args else ""


def read_events(redis, job_id: str) -> list[Event]:
    return [Event.from_json(fields[b"e"]) for _, fields in redis.xrange(events_key(job_id))]


def failure(job: Job, status: str) -> dict:
    """For a job that ended without an error event (it never started, or its worker died)."""
    result = job.latest_result()
    reason = result.exc_string.strip().splitlines()[-1] if result and result.exc_string else ""
    return {"type": "cancelled" if status == "cancelled" else "api_error",
            "message": f"job {job.id} {status}" + (f": {reason}" if reason else "")}


def job_view(redis, job: Job, base_url: str = "") -> dict:
    status = STATUS.get(job.get_status(), "queued")
    view = {
        "id": job.id, "type": "job", "status": status, "priority": job.origin,
        "model": requested_model(job), "metadata": job.meta.get("metadata", {}),
        "created_at": iso(job.created_at), "started_at": iso(job.started_at), "ended_at": iso(job.ended_at),
        "status_url": f"{base_url}/v1/jobs/{job.id}", "events_url": f"{base_url}/v1/jobs/{job.id}/events",
    }
    if job.meta.get("batch_id"):
        view["batch_id"], view["custom_id"] = job.meta["batch_id"], job.meta.get("custom_id")
    if status == "queued":
        view["position"] = job.get_position()
        return view
    events = read_events(redis, job.id)
    assembler = MessageAssembler()
    for event in events:
        assembler.apply(event)
    if status == "started":
        elapsed = (datetime.now(timezone.utc) - job.started_at.replace(tzinfo=timezone.utc)).total_seconds() \
            if job.started_at else 0.0
        view["progress"] = {"output_tokens": int(redis.get(progress_key(job.id)) or 0),
                            "elapsed_seconds": round(elapsed, 3),
                            "text": assembler.text("text"), "thinking": assembler.text("thinking")}
    end = next((e for e in events if e.type == MESSAGE_END), None)
    if status == "finished" and end is not None:
        view["message"] = anthropic_sse.final_message(job.id, requested_model(job), assembler.blocks, end.data)
    elif status == "finished":
        result = job.return_value()
        view["message"] = anthropic_sse.final_message(job.id, result["model"], result["content"], result)
    error = next((e for e in events if e.type == ERROR), None)
    if status in ("failed", "cancelled"):
        view["error"] = error.data["error"] if error else failure(job, status)
    return view
