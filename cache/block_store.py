"""The prompt cache's blocks on disk, written as they are made, so a worker that crashed comes back warm.

Every block the index makes is written by a background thread, one file per
block named by its content digest (its whole prefix included), and deleted
when the index drops it: the directory holds what the cache holds, within
the same budget, whatever way the worker stops. A file is written under a
temporary name and renamed, so a crash mid-write leaves no torn block; a
block whose parent is missing (written after a crash took its parent's
file) is never loaded.

The token path pays only for handing the thread the block's K/V, already
evaluated (bfloat16 viewed as uint16 there, since NumPy has no bfloat16):
MLX evaluation is not thread-safe, so the thread only reads finished arrays.
Files are NumPy `.npz` (per layer `k0`, `v0`, ...) with a JSON header naming
the model and mlx-lm version; a header for another model or version is
ignored with a warning.
"""

from dataclasses import dataclass
import hashlib
import json
import logging
import os
from pathlib import Path
import queue
import threading

import mlx.core as mx
from mlx_lm import __version__ as mlx_lm_version
import numpy as np

from cache.block_index import Block
from cache.prompt_cache import PromptCache

log = logging.getLogger(__name__)

# Blocks waiting for the disk; past this the newest are not written (the cache itself is unaffected).
MAX_PENDING_WRITES = 256
SUFFIX = ".npz"


def model_cache_dir(root: str, model_name: str) -> Path:
    """One directory per model under HEARTH_CACHE_DIR."""
    return Path(root) / hashlib.sha256(model_name.encode()).hexdigest()[:16]


@dataclass
class _Stored:
    digest: str
    parent: str
    tokens: list
    path: Path
    mtime: int


class BlockStore:
    def __init__(self, directory: Path, model_name: str):
        self.directory = Path(directory)
        self.model_name = model_name
        self._pending: queue.Queue = queue.Queue(maxsize=MAX_PENDING_WRITES)
        self._thread: threading.Thread | None = None

    # Start: load what a previous life left, then record every change.

    def attach(self, cache: PromptCache) -> int:
        """Load the stored blocks into `cache` (oldest first, within its budget), then keep the
        directory in step with it. Returns how many blocks were loaded."""
        if not cache.blockwise:
            return 0
        self.directory.mkdir(parents=True, exist_ok=True)
        loaded = self._load(cache)
        cache.index.listener = self
        cache.index.evict()  # the budget may be smaller than last time; what goes is deleted
        self._thread = threading.Thread(target=self._write_forever, name="hearth-block-store", daemon=True)
        self._thread.start()
        if loaded:
            log.info("loaded %d prompt-cache blocks (%d bytes) from %s", loaded, cache.index.nbytes, self.directory)
        return loaded

    def _load(self, cache: PromptCache) -> int:
        stored = {}
        for path in self.directory.iterdir():
            if path.suffix != SUFFIX:
                path.unlink(missing_ok=True)  # a write a crash cut short
                continue
            entry = self._read_header(path)
            if entry is not None:
                stored[entry.digest] = entry
        loaded = set()

        def depth(entry):
            n = 0
            while entry is not None and entry.parent:
                entry, n = stored.get(entry.parent), n + 1
            return n

        # Oldest first, parents before children: the newest end up most recently used.
        for entry in sorted(stored.values(), key=lambda e: (e.mtime, depth(e))):
            chain = self._chain(entry, stored, loaded)
            if chain is None:
                continue
            try:
                arrays = self._read_arrays(entry.path)
            except Exception as exc:  # noqa: BLE001 - a bad file must not stop the worker
                log.warning("ignoring unreadable prompt-cache block %s: %s", entry.path, exc)
                continue
            if len(arrays) != len(cache.model.layers) or arrays[0][0].shape[2] != len(entry.tokens):
                log.warning("ignoring prompt-cache block %s: it does not fit this model", entry.path)
                continue
            tokens = [t for e in chain for t in e.tokens]
            nbytes = sum(k.nbytes + v.nbytes for k, v in arrays)
            cache.index.insert(tokens, lambda start, end, arrays=arrays, nbytes=nbytes: (arrays, nbytes))
            loaded.add(entry.digest)
        for entry in stored.values():
            if entry.digest not in loaded:
                entry.path.unlink(missing_ok=True)
        return len(loaded)

    @staticmethod
    def _chain(entry: _Stored, stored: dict, loaded: set) -> list | None:
        """The entry's blocks from the root, if every ancestor was loaded."""
        chain = [entry]
        while chain[-1].parent:
            if chain[-1].parent not in loaded:
                return None
            chain.append(stored[chain[-1].parent])
        return chain[::-1]

    def _read_header(self, path: Path) -> _Stored | None:
        try:
            with np.load(path) as data:
                header = json.loads(str(data["header"]))
        except Exception as exc:  # noqa: BLE001
            log.warning("ignoring unreadable prompt-cache block %s: %s", path, exc)
            path.unlink(missing_ok=True)
            return None
        if header.get("model") != self.model_name or header.get("mlx_lm_version") != mlx_lm_version:
            log.warning("ignoring prompt-cache block %s: made for %s with mlx-lm %s", path,
                        header.get("model"), header.get("mlx_lm_version"))
            return None
        return _Stored(path.stem, header["parent"], header["tokens"], path, path.stat().st_mtime_ns)

    @staticmethod
    def _read_arrays(path: Path) -> list:
        with np.load(path) as data:
            header = json.loads(str(data["header"]))
            dtype = getattr(mx, header["dtype"])
            layers = []
            for layer in range(header["layers"]):
                k, v = (mx.array(data[f"{name}{layer}"]) for name in ("k", "v"))
                if header["viewed_as_uint16"]:
                    k, v = k.view(dtype), v.view(dtype)
                layers.append((k, v))
        mx.eval(layers)
        return layers

    # While running: the index tells of each block made or dropped.

    def added(self, block: Block):
        layers = block.payload
        dtype = layers[0][0].dtype
        viewed = dtype == mx.bfloat16
        if viewed:
            layers = [(k.view(mx.uint16), v.view(mx.uint16)) for k, v in layers]
            mx.eval(layers)
        header = {"model": self.model_name, "mlx_lm_version": mlx_lm_version, "tokens": list(block.tokens),
                  "parent": block.parent_digest.hex(),
                  "dtype": str(dtype).removeprefix("mlx.core."), "viewed_as_uint16": viewed, "layers": len(layers)}
        self._put(("write", block.digest.hex(), header, layers))

    def removed(self, block: Block):
        self._put(("delete", block.digest.hex(), None, None))

    def _put(self, item):
        try:
            self._pending.put_nowait(item)
        except queue.Full:
            if item[0] == "delete":
                self._pending.put(item)  # a delete must not be lost (the file would outlive its block)
            else:
                log.debug("block store behind: block %s not written", item[1])

    def flush(self):
        """Wait until every block made so far is on disk (a clean shutdown, a test)."""
        if self._thread is not None:
            self._pending.join()

    def _write_forever(self):
        while True:
            kind, digest, header, layers = self._pending.get()
            path = self.directory / f"{digest}{SUFFIX}"
            try:
                if kind == "write":
                    arrays = {f"{name}{layer}": np.asarray(array)
                              for layer, pair in enumerate(layers) for name, array in zip("kv", pair)}
                    partial = path.with_suffix(".partial")
                    with open(partial, "wb") as file:
                        np.savez(file, header=np.array(json.dumps(header)), **arrays)
                    os.replace(partial, path)
                else:
                    path.unlink(missing_ok=True)
            except Exception:  # a full disk costs warmth after a crash, never a job
                log.warning("block store: could not %s %s", kind, path, exc_info=True)
            finally:
                self._pending.task_done()
