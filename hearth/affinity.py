"""Naming a prompt's prefixes, so a conversation goes back to the worker whose cache holds it.

The API never loads a model, so it cannot count tokens; it names a prompt's
prefixes by their content instead: the model, then its tools, its system
prompt and each message in turn, each hash chained to the one before (the
order Hearth renders them in). A later turn of a conversation repeats every
message of the turn before, so its fingerprints begin with all of that
turn's. A worker records the fingerprints of each request it served beside
the cache blocks its prompt left behind and publishes those its cache still
holds (workers/affinity.py); the API sends a request to the worker holding
its deepest fingerprint (api/placement.py).
"""

import hashlib
import json

DIGEST_BYTES = 8  # 16 hex characters: compact, and collisions between live prefixes are negligible


def fingerprints(request: dict, model_key: str) -> list[str]:
    """One fingerprint per prefix: [tools], [tools, system], [tools, system, first message], ..."""
    parts = [request.get("tools") or [], request.get("system") or "", *request.get("messages", [])]
    digest = hashlib.blake2b(model_key.encode(), digest_size=DIGEST_BYTES).digest()
    out = []
    for part in parts:
        chained = hashlib.blake2b(digest, digest_size=DIGEST_BYTES)
        chained.update(json.dumps(part, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode())
        digest = chained.digest()
        out.append(digest.hex())
    return out


# Fingerprints 0 and 1 name what conversations share (tools, system prompt); deeper ones, one conversation.
SHARED_LEVELS = 2
