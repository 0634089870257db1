"""Run mlx-lm's own server, reporting its prompt-cache size after every insert.

Its log rounds the cache size to 0.01 GB, too coarse for a tiny model; this
probe only prints `LRUPromptCache.nbytes` and changes nothing else.

    python bench/mlx_lm_server_probe.py --model models/hearth-tiny --port 8181 ...
"""

import sys

from mlx_lm.models import cache


def _insert_and_report(original):
    def insert_cache(self, *args, **kwargs):
        original(self, *args, **kwargs)
        # Terminated, because the server's log lines can run into it from another thread.
        print(f"PROBE cache_bytes={self.nbytes};", file=sys.stderr, flush=True)

    return insert_cache


cache.LRUPromptCache.insert_cache = _insert_and_report(cache.LRUPromptCache.insert_cache)

if __name__ == "__main__":
    from mlx_lm.server import main

    main()
