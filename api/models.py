"""Which loaded model serves a requested model name.

Claude Code asks for Anthropic names. Configured aliases (HEARTH_ALIASES)
win; then `claude-haiku-*` (its side calls: titles, safety checks) goes to
the fast model; every other name goes to the main model. The response
echoes the name that was asked for.
"""

from fnmatch import fnmatchcase

from hearth.models import load_aliases, served_models
from hearth.settings import Settings


class ModelRouter:
    def __init__(self, settings: Settings):
        self.main = settings.model
        self.fast = settings.fast_model_or_main
        self.aliases = load_aliases(settings)
        self.served = served_models(settings)

    def resolve(self, requested: str) -> str:
        if requested in self.served:
            return requested
        if requested in self.aliases:
            return self.aliases[requested]
        for pattern, model in self.aliases.items():
            if fnmatchcase(requested, pattern):
                return model
        if requested.startswith("claude-") and "haiku" in requested:
            return self.fast
        return self.main
