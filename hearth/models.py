"""Which models Hearth serves: the main one, the fast one, and alias targets.

Aliases come from a JSON file named by HEARTH_ALIASES, mapping a requested
model name (exact, or a glob such as `claude-opus-*`) to a model id (a local
directory or a Hugging Face repo id):

    {"qwen-coder": "mlx-community/Qwen3-Coder-30B-A3B-Instruct-4bit",
     "claude-opus-*": "mlx-community/Qwen3-32B-4bit"}
"""

import json
from pathlib import Path, PurePath

from hearth.settings import Settings


class AliasFileError(ValueError):
    pass


def load_aliases(settings: Settings) -> dict:
    if not settings.aliases_file:
        return {}
    path = Path(settings.aliases_file)
    try:
        aliases = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise AliasFileError(f"HEARTH_ALIASES={path}: {exc}") from exc
    if not isinstance(aliases, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in aliases.items()):
        raise AliasFileError(f"HEARTH_ALIASES={path}: expected an object of name -> model id")
    return aliases


def served_models(settings: Settings) -> list:
    """Every model a worker must load, main model first."""
    return list(dict.fromkeys([settings.model, settings.fast_model_or_main, *load_aliases(settings).values()]))


def model_key(model_id: str) -> str:
    """The name a model goes by between machines: a hub id as it is, a local directory by its name.

    Each Mac may keep the same model at its own path, so a path is not an identity;
    `mlx-community/Qwen3-8B-4bit` or `hearth-tiny` is.
    """
    if model_id.startswith(("/", ".", "~")) or Path(model_id).expanduser().is_dir():
        return PurePath(model_id.rstrip("/")).name
    return model_id


def same_model(a: str, b: str) -> bool:
    """Two names for one model: the same key, or a directory's name and a path ending in it
    (`models/hearth-tiny` on a machine that lacks it looks like a hub id)."""
    a, b = model_key(a), model_key(b)
    if a == b:
        return True
    return ("/" not in a or "/" not in b) and PurePath(a).name == PurePath(b).name
