"""Fault injection for the reliability tests: a job that raises mid-generation, on demand.

Off unless HEARTH_FAULT_INJECTION=1. Then each generation first takes the
key `hearth:fault` from Redis: `memory-error` makes it raise MemoryError
after its first token, as an out-of-memory in MLX would.
"""

from contextlib import closing

from hearth.contract import FAULT_KEY


class FaultInjectingEngine:
    """An Engine, but for generations failed on request."""

    def __init__(self, engine, connection):
        self._engine = engine
        self._redis = connection

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def generate(self, *args, **kwargs):
        fault = self._redis.getdel(FAULT_KEY)
        with closing(self._engine.generate(*args, **kwargs)) as steps:
            for step in steps:
                yield step
                if fault == b"memory-error":
                    raise MemoryError("simulated out-of-memory (fault injection)")
