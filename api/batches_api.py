"""Anthropic Message Batches on top of Hearth jobs (background queue), as Falcon resources.

    POST /v1/messages/batches                 {"requests": [{"custom_id", "params"}]}
    GET  /v1/messages/batches                 (?limit=, ?after_id=)
    GET  /v1/messages/batches/{id}
    POST /v1/messages/batches/{id}/cancel
    GET  /v1/messages/batches/{id}/results    JSONL, one result per request

A batch is a Redis hash of timestamps plus a list of (custom_id, job id);
its counts and status are derived from its jobs each time they are read.
"""

from datetime import datetime, timedelta, timezone
import json
import secrets

import falcon
from starlette.concurrency import run_in_threadpool

from api.anthropic_request import parse_messages_request, require
from api.auth import principal_of
from api.errors import NotFound
from api.job_views import STATUS, job_view
from api.jobs_api import base_url, read_json
from hearth.contract import BATCH_INDEX, QUEUE_BACKGROUND, batch_key

MAX_REQUESTS = 10_000
BATCH_TTL = timedelta(days=1)


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


class Batches:
    """Batch records in Redis (sync: called through a thread)."""

    def __init__(self, jobs, owner: str | None = None):
        self.jobs = jobs
        self.redis = jobs.connection
        self.owner = owner  # a hash of the caller's API key, when keys are in use

    def create(self, requests: list, router) -> str:
        parsed = []
        for i, item in enumerate(requests):
            require(isinstance(item, dict) and isinstance(item.get("custom_id"), str) and item["custom_id"],
                     f"requests[{i}].custom_id: expected a non-empty string")
            require(isinstance(item.get("params"), dict), f"requests[{i}].params: expected a Messages request")
            parsed.append((item["custom_id"], parse_messages_request(dict(item["params"], stream=False), router)[0]))
        ids = [custom_id for custom_id, _ in parsed]
        require(len(set(ids)) == len(ids), "requests: custom_id values must be unique")
        batch_id = "msgbatch_" + secrets.token_hex(12)
        created = datetime.now(timezone.utc)
        pairs = []
        for custom_id, request in parsed:
            job_id = self.jobs.new_job_id()
            self.jobs.enqueue(job_id, request.to_dict(), QUEUE_BACKGROUND, f"batch {batch_id} {custom_id}",
                              meta={"batch_id": batch_id, "custom_id": custom_id},
                              result_ttl=int(BATCH_TTL.total_seconds()), owner=self.owner)
            pairs.append(json.dumps([custom_id, job_id]))
        key = batch_key(batch_id)
        with self.redis.pipeline() as pipe:
            pipe.hset(key, mapping={"created_at": created.isoformat().replace("+00:00", "Z"),
                                    "expires_at": (created + BATCH_TTL).isoformat().replace("+00:00", "Z"),
                                    "owner": self.owner or ""})
            pipe.rpush(key + ":requests", *pairs)
            pipe.expire(key, BATCH_TTL)
            pipe.expire(key + ":requests", BATCH_TTL)
            pipe.zadd(BATCH_INDEX, {batch_id: created.timestamp()})
            pipe.execute()
        return batch_id

    def _record(self, batch_id: str) -> tuple[dict, list]:
        record = {k.decode(): v.decode() for k, v in self.redis.hgetall(batch_key(batch_id)).items()}
        if not record or (self.owner is not None and record.get("owner") != self.owner):
            raise NotFound(f"message batch {batch_id} not found (it may have expired)")
        pairs = [json.loads(raw) for raw in self.redis.lrange(batch_key(batch_id) + ":requests", 0, -1)]
        return record, pairs

    def _jobs(self, pairs):
        from rq.job import Job

        jobs = Job.fetch_many([job_id for _, job_id in pairs], connection=self.redis)
        return [(custom_id, job) for (custom_id, _), job in zip(pairs, jobs)]

    def view(self, batch_id: str, url: str) -> dict:
        record, pairs = self._record(batch_id)
        counts = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
        for _, job in self._jobs(pairs):
            status = STATUS.get(job.get_status()) if job else None
            counts[{"finished": "succeeded", "failed": "errored", "cancelled": "canceled",
                    None: "expired"}.get(status, "processing")] += 1
        ended = counts["processing"] == 0
        if ended and "ended_at" not in record:
            record["ended_at"] = now_iso()
            self.redis.hset(batch_key(batch_id), "ended_at", record["ended_at"])
        status = "ended" if ended else ("canceling" if "cancel_initiated_at" in record else "in_progress")
        return {"id": batch_id, "type": "message_batch", "processing_status": status, "request_counts": counts,
                "created_at": record["created_at"], "expires_at": record["expires_at"],
                "ended_at": record.get("ended_at"), "cancel_initiated_at": record.get("cancel_initiated_at"),
                "archived_at": None,
                "results_url": f"{url}/v1/messages/batches/{batch_id}/results" if ended else None}

    @classmethod
    def for_request(cls, state, req) -> "Batches":
        return cls(state.jobs, principal_of(req.scope))

    def cancel(self, batch_id: str):
        _, pairs = self._record(batch_id)
        self.redis.hsetnx(batch_key(batch_id), "cancel_initiated_at", now_iso())
        for _, job_id in pairs:
            self.jobs.cancel_quietly(job_id)

    def results(self, batch_id: str) -> list[dict]:
        _, pairs = self._record(batch_id)
        lines = []
        for custom_id, job in self._jobs(pairs):
            if job is None:
                result = {"type": "expired"}
            else:
                view = job_view(self.redis, job)
                result = {"finished": {"type": "succeeded", "message": view.get("message")},
                          "failed": {"type": "errored", "error": {"type": "error", "error": view.get("error")}},
                          "cancelled": {"type": "canceled"}}.get(view["status"], {"type": "processing"})
            lines.append({"custom_id": custom_id, "result": result})
        return lines

    def recent(self, limit: int, after_id: str | None) -> tuple[list, bool]:
        ids = [b.decode() for b in self.redis.zrevrange(BATCH_INDEX, 0, -1)]
        ids = [i for i in ids if self.redis.exists(batch_key(i))
               and (self.owner is None or self.redis.hget(batch_key(i), "owner") == self.owner.encode())]
        if after_id:
            require(after_id in ids, f"after_id {after_id}: no such batch")
            ids = ids[ids.index(after_id) + 1:]
        return ids[:limit], len(ids) > limit


class BatchesResource:
    def __init__(self, state):
        self.state = state

    async def on_post(self, req, resp):
        body = await read_json(req, self.state.settings.max_body_bytes)
        require(isinstance(body, dict) and isinstance(body.get("requests"), list) and body["requests"],
                 "requests: expected a non-empty list")
        require(len(body["requests"]) <= MAX_REQUESTS, f"requests: at most {MAX_REQUESTS}")
        batches = Batches.for_request(self.state, req)
        batch_id = await run_in_threadpool(batches.create, body["requests"], self.state.router)
        resp.media = await run_in_threadpool(batches.view, batch_id, base_url(req))

    async def on_get(self, req, resp):
        batches = Batches.for_request(self.state, req)
        limit = req.get_param_as_int("limit", min_value=1, max_value=100, default=20)
        ids, has_more = await run_in_threadpool(batches.recent, limit, req.get_param("after_id"))
        views = [await run_in_threadpool(batches.view, i, base_url(req)) for i in ids]
        resp.media = {"data": views, "has_more": has_more,
                      "first_id": ids[0] if ids else None, "last_id": ids[-1] if ids else None}


class BatchResource:
    def __init__(self, state):
        self.state = state

    async def on_get(self, req, resp, batch_id):
        resp.media = await run_in_threadpool(Batches.for_request(self.state, req).view, batch_id, base_url(req))


class BatchCancelResource(BatchResource):
    async def on_post(self, req, resp, batch_id):
        await run_in_threadpool(Batches.for_request(self.state, req).cancel, batch_id)
        await self.on_get(req, resp, batch_id)


class BatchResultsResource(BatchResource):
    async def on_get(self, req, resp, batch_id):
        lines = await run_in_threadpool(Batches.for_request(self.state, req).results, batch_id)
        resp.content_type = "application/binary"
        resp.text = "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines)


def add_batch_routes(app: falcon.asgi.App, state):
    app.add_route("/v1/messages/batches", BatchesResource(state))
    app.add_route("/v1/messages/batches/{batch_id}", BatchResource(state))
    app.add_route("/v1/messages/batches/{batch_id}/cancel", BatchCancelResource(state))
    app.add_route("/v1/messages/batches/{batch_id}/results", BatchResultsResource(state))
