"""Fault injection for the reliability tests: a batched step that raises, on demand.

Off unless HEARTH_FAULT_INJECTION=1. Then each sequence a batch starts
first takes the key `hearth:fault` from Redis: `memory-error` makes the step
after that sequence's first token raise MemoryError, as an out-of-memory in
MLX would (failing every job of that model's batch, as a real one would).
"""

from hearth.contract import FAULT_KEY


class FaultInjectingEngine:
    """An Engine, but for batches that fail on request."""

    def __init__(self, engine, connection):
        self._engine = engine
        self._redis = connection

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def batch(self, *args, **kwargs):
        return FaultInjectingBatch(self._engine.batch(*args, **kwargs), self._redis)


class FaultInjectingBatch:
    def __init__(self, batch, connection):
        self._batch = batch
        self._redis = connection
        self._doomed = set()

    def __getattr__(self, name):
        return getattr(self._batch, name)

    def __len__(self):
        return len(self._batch)

    def __contains__(self, key):
        return key in self._batch

    def add(self, key, *args, **kwargs):
        if self._redis.getdel(FAULT_KEY) == b"memory-error":
            self._doomed.add(key)
        return self._batch.add(key, *args, **kwargs)

    def step(self):
        outputs = self._batch.step()
        if any(output.token is not None and output.key in self._doomed for output in outputs):
            self._doomed.clear()
            raise MemoryError("simulated out-of-memory (fault injection)")
        return outputs
