"""Fault injection for the reliability tests: a batched step that raises, or a reply scripted, on demand.

Off unless HEARTH_FAULT_INJECTION=1. Then each sequence a batch starts
first takes the key `hearth:fault` from Redis:

- `memory-error`: the step after that sequence's first token raises
  MemoryError, as an out-of-memory in MLX would (failing every job of that
  model's batch, as a real one would);
- `reply:<text>`: that sequence writes exactly <text>, then its end token,
  whatever the model would have written (its K/V, and the prompt cache, stay
  the model's own), held to the same token caps as the model's own words.
  The integration tests drive the real Claude Code CLI through a tool call
  this way: a tiny model cannot be relied on to write one.
"""

from hearth.contract import FAULT_KEY
from workers.batch import Output


class FaultInjectingEngine:
    """An Engine, but for batches that fail or reply as told."""

    def __init__(self, engine, connection):
        self._engine = engine
        self._redis = connection

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def batch(self, *args, **kwargs):
        return FaultInjectingBatch(self._engine, self._engine.batch(*args, **kwargs), self._redis)


class FaultInjectingBatch:
    def __init__(self, engine, batch, connection):
        self._engine = engine
        self._batch = batch
        self._redis = connection
        self._doomed = set()
        self._scripts: dict[str, list] = {}  # key -> the tokens it has still to write
        self._room: dict[str, int] = {}  # key -> the tokens its max_tokens still allows

    def __getattr__(self, name):
        return getattr(self._batch, name)

    def __len__(self):
        return len(self._batch)

    def __contains__(self, key):
        return key in self._batch

    def add(self, key, tokens, sampling, max_tokens, *args, **kwargs):
        fault = (self._redis.getdel(FAULT_KEY) or b"").decode()
        if fault == "memory-error":
            self._doomed.add(key)
        elif fault.startswith("reply:"):
            end_token = next(iter(self._engine.tokenizer.eos_token_ids))
            self._scripts[key] = self._engine.encode(fault[len("reply:"):]) + [end_token]
            self._room[key] = max_tokens
        return self._batch.add(key, tokens, sampling, max_tokens, *args, **kwargs)

    def extend(self, key, tokens, max_tokens):
        if key in self._scripts:
            self._room[key] = max_tokens
        return self._batch.extend(key, tokens, max_tokens)

    def remove(self, key):
        self._scripts.pop(key, None)
        self._room.pop(key, None)
        return self._batch.remove(key)

    def step(self):
        outputs = self._batch.step()
        if any(output.token is not None and output.key in self._doomed for output in outputs):
            self._doomed.clear()
            raise MemoryError("simulated out-of-memory (fault injection)")
        scripted = []
        for output in outputs:
            script = self._scripts.get(output.key)
            if not script or output.token is None:
                scripted.append(output)
                continue
            # The model's own token gives way to the script's; should the model end first, the rest comes at
            # once, as far as its max_tokens allows: a cap cuts a script as it would the model's own words.
            count = min(1 if output.finish is None else len(script), self._room[output.key])
            for token in script[:count]:
                scripted.append(Output(output.key, token=token))
            del script[:count]
            self._room[output.key] -= count
            if not script or output.finish is not None or not self._room[output.key]:
                scripted[-1].finish = "length" if script else "stop"
                del self._scripts[output.key], self._room[output.key]
        return scripted
