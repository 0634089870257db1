"""What jobs share in the resident worker process: settings, loaded models, pinned K/V.

rq calls job functions (count_tokens_job) by import path with only the
job's arguments, so the worker installs its runtime here once at start-up;
tests install a fake one.
"""

from dataclasses import dataclass, field

from hearth.models import model_key, same_model
from hearth.settings import Settings


class ModelNotLoaded(LookupError):
    pass


@dataclass
class Runtime:
    settings: Settings
    engines: dict
    # Prompt-cache blocks pinned for suspended jobs: job id -> (engine, blocks).
    held: dict = field(default_factory=dict)

    def model_name(self, model: str) -> str:
        """The name this worker loaded `model` under: its id here, or one with its key (the API names models by key)."""
        if model in self.engines:
            return model
        name = next((name for name in self.engines if same_model(name, model)), None)
        if name is None:
            raise ModelNotLoaded(f"model {model!r} is not loaded by this worker")
        return name

    def engine_for(self, model: str):
        return self.engines[self.model_name(model)]

    def model_keys(self) -> dict:
        """key -> id of every model this worker serves, as it announces them."""
        return {model_key(name): name for name in self.engines}

    def hold(self, job_id: str, engine, tokens: list):
        """Keep a suspended job's K/V in the prompt cache until it resumes or goes away."""
        self.release(job_id)
        self.held[job_id] = (engine, engine.prompt_cache.hold(tokens))

    def release(self, job_id: str):
        engine, blocks = self.held.pop(job_id, (None, None))
        if engine is not None:
            engine.prompt_cache.unhold(blocks)


_current: Runtime | None = None


def install(runtime: Runtime | None):
    global _current
    _current = runtime


def current() -> Runtime:
    if _current is None:
        raise RuntimeError("no Hearth runtime installed: jobs run inside `hearth worker`")
    return _current
