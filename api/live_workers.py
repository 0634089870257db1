"""The live workers as their heartbeats announce them: the models each serves, its slots, its jobs.

Read from Redis at most once a second, by a task of the API's own (every
request reads the last snapshot, never Redis): model names resolve against
what is served now, and placement picks among the workers serving a model.
"""

import asyncio
from dataclasses import dataclass, field
import json
import logging

from redis.exceptions import RedisError

from hearth.contract import QUEUE_INTERACTIVE, WORKER_HEARTBEAT_PATTERN, priority_of

log = logging.getLogger(__name__)

REFRESH_SECONDS = 1.0


@dataclass(frozen=True)
class LiveWorker:
    name: str
    models: dict  # model key -> the id the worker loaded it from
    slots: int
    jobs: list = field(default_factory=list)  # what each running job is doing (workers/scheduler.describe)
    host: str = ""

    def free_slots(self, priority: str) -> int:
        """Slots a job of `priority` could have now: interactive work takes background jobs' slots."""
        holding = [job for job in self.jobs if priority != QUEUE_INTERACTIVE
                   or priority_of(job.get("queue", "")) == QUEUE_INTERACTIVE]
        return self.slots - len(holding)


def parse_heartbeat(name: str, raw) -> LiveWorker | None:
    try:
        beat = json.loads(raw)
    except (TypeError, ValueError):
        return None
    return LiveWorker(name=name, models=dict(beat.get("models") or {}), slots=int(beat.get("slots") or 1),
                      jobs=list(beat.get("jobs") or []), host=beat.get("host", ""))


async def read_live_workers(redis) -> dict[str, LiveWorker]:
    prefix = WORKER_HEARTBEAT_PATTERN[:-1]
    keys = [key async for key in redis.scan_iter(match=WORKER_HEARTBEAT_PATTERN, count=100)]
    values = await redis.mget(keys) if keys else []
    workers = {}
    for key, raw in zip(keys, values):
        name = key.decode()[len(prefix):]
        worker = parse_heartbeat(name, raw) if raw is not None else None
        if worker is not None:
            workers[name] = worker
    return dict(sorted(workers.items()))


class LiveWorkers:
    def __init__(self):
        self.workers: dict[str, LiveWorker] = {}
        self._task: asyncio.Task | None = None

    def serving(self, key: str) -> list[LiveWorker]:
        return [worker for worker in self.workers.values() if key in worker.models]

    def models(self) -> dict:
        """Every model key a live worker serves -> the id it was loaded from."""
        return {key: model for worker in self.workers.values() for key, model in worker.models.items()}

    async def refresh(self, redis):
        self.workers = await read_live_workers(redis)

    def start(self, redis):
        self._task = asyncio.get_running_loop().create_task(self._keep_fresh(redis))

    async def stop(self):
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _keep_fresh(self, redis):
        while True:
            try:
                await self.refresh(redis)
            except RedisError:
                log.debug("live workers: Redis unreachable", exc_info=True)
            await asyncio.sleep(REFRESH_SECONDS)
