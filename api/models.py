"""Which model serves a requested model name, named by its key (hearth/models.py: model_key).

In this order: a model a live worker serves (by key or id); a configured
alias (HEARTH_ALIASES, exact or glob); a Claude name, as Claude Code sends
them: `claude-haiku-*` (its side calls: titles, safety checks) to the fast
model, any other `claude-*` to the main model; a model this API is
configured with (HEARTH_MODEL, HEARTH_FAST_MODEL), whose worker may still be
starting. Any other name is a 404 at once: a job for a model nobody serves
would only wait and fail. The response echoes the name that was asked for.
"""

from fnmatch import fnmatchcase

from api.errors import NotFound
from api.live_workers import LiveWorkers
from hearth.models import load_aliases, model_key, same_model, served_models
from hearth.settings import Settings


class ModelRouter:
    def __init__(self, settings: Settings, live_workers: LiveWorkers | None = None):
        self.main = settings.model
        self.fast = settings.fast_model_or_main
        self.aliases = load_aliases(settings)
        self.configured = served_models(settings)
        self.live_workers = live_workers or LiveWorkers()  # its last snapshot of what workers serve

    @property
    def served(self) -> dict:
        """key -> model id of every model served now, else (no worker yet) of those configured."""
        return self.live_workers.models() or {model_key(model): model for model in self.configured}

    def resolve(self, requested: str) -> str:
        """The key of the model that serves `requested`; NotFound if none does."""
        target = self._target(requested)
        if target is None:
            raise NotFound(f"model {requested!r} is not served here: ask for one of "
                           f"{', '.join(sorted(self.served)) or 'the models of a running worker'}, "
                           "an alias, or a claude-* name")
        return self.key_for(target)

    def _target(self, requested: str) -> str | None:
        live = self.live_workers.models()
        if requested in live or requested in live.values():
            return requested
        if requested in self.aliases:
            return self.aliases[requested]
        for pattern, model in self.aliases.items():
            if fnmatchcase(requested, pattern):
                return model
        if requested.startswith("claude-"):
            return self.fast if "haiku" in requested else self.main
        if any(same_model(requested, model) for model in self.configured):
            return requested
        return None

    def key_for(self, model: str) -> str:
        """The key the workers announce for `model`: a path here may be a key there."""
        live = self.live_workers.models()
        return next((key for key in live if key == model or same_model(key, model)), model_key(model))
