"""Which queue a job goes to: its model's, or the worker whose prompt cache holds its prefix.

With one live worker serving the model, or none yet, the model's queue.
With several, each one's published fingerprints (workers/affinity.py) are
read in one round trip beside the length of its own queue: the worker
holding the request's deepest fingerprint gets it in its own queue, if it
can take it soon. For the conversation's own prefix, soon means it has a
free slot or fewer than HEARTH_AFFINITY_BACKLOG jobs wait for it; for what
conversations share (tools, system prompt), only a free slot: a new
conversation should not queue behind one worker while another is idle. A job left waiting in a
worker's queue longer than HEARTH_AFFINITY_WAIT, or whose worker dies,
moves to the model's queue (hearth/reaper.py: move_stranded).
"""

from dataclasses import dataclass

from rq import Queue

from hearth.affinity import SHARED_LEVELS, fingerprints
from hearth.contract import affinity_key, model_queue, worker_queue


@dataclass
class Holder:
    worker: object  # api/live_workers.py: LiveWorker
    depth: int  # how many of the request's fingerprints it holds (the deepest's level + 1)
    tokens: int  # prompt tokens its cache holds for that prefix
    waiting: int  # jobs already in its own queue at this priority
    free: int  # slots it could give the job now

    def soon(self, backlog: int) -> bool:
        return self.waiting < self.free + (backlog if self.depth > SHARED_LEVELS else 0)


class Placement:
    def __init__(self, connection, live_workers, backlog: int):
        self.connection = connection
        self.live_workers = live_workers
        self.backlog = backlog

    def queue_for(self, request: dict, priority: str) -> str:
        """Names the job's queue; adds the request's fingerprints to it (the worker records them)."""
        key = request["model"]
        if "messages" in request:
            request["fingerprints"] = fingerprints(request, key)
        holder = self._holder(request.get("fingerprints") or [], self.live_workers.serving(key), priority)
        if holder is None:
            return model_queue(priority, key)
        return worker_queue(priority, holder.worker.name)

    def _holder(self, prints: list, candidates: list, priority: str) -> Holder | None:
        """The worker holding the deepest prefix and able to take the job soon, if any."""
        if len(candidates) < 2 or not prints:
            return None  # one worker (or none yet) takes it from the model's queue alike
        with self.connection.pipeline(transaction=False) as pipe:
            for worker in candidates:
                pipe.hmget(affinity_key(worker.name), prints)
                pipe.llen(Queue.redis_queue_namespace_prefix + worker_queue(priority, worker.name))
            replies = pipe.execute()
        holders = []
        for worker, held, waiting in zip(candidates, replies[::2], replies[1::2]):
            depth = next((level + 1 for level in range(len(prints) - 1, -1, -1) if held[level] is not None), 0)
            if depth:
                holders.append(Holder(worker, depth, int(held[depth - 1]), int(waiting),
                                      max(worker.free_slots(priority), 0)))
        holders = [holder for holder in holders if holder.soon(self.backlog)]
        if not holders:
            return None
        return max(holders, key=lambda h: (h.depth, h.tokens, h.free - h.waiting))
