"""Which loaded model serves a requested model name.

Claude Code asks for Anthropic names. Configured aliases (HEARTH_ALIASES)
win; then `claude-haiku-*` (its side calls: titles, safety checks) goes to
the fast model; every other name goes to the main model. The response
echoes the name that was asked for.
"""

from fnmatch import fnmatchcase
from functools import cache
import json
from pathlib import Path

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

    def check_max_tokens(self, model: str, max_tokens: int) -> str | None:
        """A complaint if `max_tokens` alone is beyond the model's context window (None if fine or unknown)."""
        window = context_window(model)
        if window and max_tokens > window:
            return f"max_tokens: {max_tokens} is beyond the model's context window of {window} tokens"
        return None


@cache
def context_window(model: str) -> int | None:
    """From a local model directory's config.json; a hub id is checked by the worker instead."""
    try:
        config = json.loads((Path(model) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    window = config.get("max_position_embeddings")
    return window if isinstance(window, int) and window > 0 else None
