"""Save the hottest prompt-cache chains on shutdown and load them at start.

The first turn after a restart is then a hit. Files are mlx-lm's
`save_prompt_cache` format, holding exactly the chain's tokens (no padding),
with the model id, mlx-lm version and token ids in the metadata; a file made
for another model or mlx-lm version is ignored with a warning.
"""

import hashlib
import json
import logging
from pathlib import Path

from mlx_lm import __version__ as mlx_lm_version
from mlx_lm.models.cache import load_prompt_cache, save_prompt_cache

from cache.prompt_cache import PromptCache

log = logging.getLogger(__name__)

MAX_SAVED_CHAINS = 32


def model_cache_dir(root: str, model_name: str) -> Path:
    slug = hashlib.sha256(model_name.encode()).hexdigest()[:16]
    return Path(root) / slug


def save(cache: PromptCache, directory: Path, model_name: str) -> int:
    if not cache.blockwise:
        return 0
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob("*.safetensors"):
        old.unlink()
    saved = 0
    for rank, (tokens, blocks, shared) in enumerate(cache.index.chains(limit=MAX_SAVED_CHAINS)):
        # Only what earlier files do not hold: a shared system-and-tools prefix is written once.
        start = sum(len(b.tokens) for b in blocks[:shared])
        if start == len(tokens):
            continue
        kv = cache.assemble(blocks, len(tokens), start=start)
        metadata = {"model": model_name, "mlx_lm_version": mlx_lm_version, "tokens": json.dumps(tokens),
                    "start": str(start)}
        save_prompt_cache(str(directory / f"{rank:02d}.safetensors"), kv, metadata)
        saved += 1
    log.info("saved %d prompt-cache chains to %s", saved, directory)
    return saved


def load(cache: PromptCache, directory: Path, model_name: str) -> int:
    if not cache.blockwise or not directory.is_dir():
        return 0
    loaded = 0
    # In saving order: a file's prefix comes from the files before it.
    for path in sorted(directory.glob("*.safetensors")):
        try:
            kv, metadata = load_prompt_cache(str(path), return_metadata=True)
            if metadata.get("model") != model_name or metadata.get("mlx_lm_version") != mlx_lm_version:
                log.warning("ignoring prompt cache %s: made for %s with mlx-lm %s", path,
                            metadata.get("model"), metadata.get("mlx_lm_version"))
                continue
            tokens, start = json.loads(metadata["tokens"]), int(metadata.get("start", 0))
            if len(kv) != len(cache.model.layers) or kv[0].offset != len(tokens) - start:
                log.warning("ignoring prompt cache %s: it does not fit this model", path)
                continue
            if not cache.adopt(kv, tokens, start):
                log.warning("ignoring prompt cache %s: the prefix it extends was not loaded", path)
                continue
            loaded += 1
        except Exception as exc:  # noqa: BLE001 - a bad file must not stop the worker
            log.warning("ignoring unreadable prompt cache %s: %s", path, exc)
    if loaded:
        log.info("loaded %d prompt-cache chains from %s", loaded, directory)
    return loaded
