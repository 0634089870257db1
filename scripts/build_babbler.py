"""A model that never stops talking: the bundled tokenizer with random weights.

    python scripts/build_babbler.py TARGET_DIR

It never picks a special token (no end of turn, no thinking, no tool call),
so a job on it runs until its max_tokens: the long generation that tests
cancel or preempt on demand, and the background job of bench/preemption.py.
Its output head is its own (untied): greedy decoding then wanders through the
vocabulary instead of repeating the last token, so greedy runs are worth
comparing. Same architecture and size as the bundled model, so the same cost
per token.
"""

import json
from pathlib import Path
import shutil
import sys

REPO = Path(__file__).resolve().parents[1]
BUNDLED_MODEL = REPO / "models" / "hearth-tiny"


def build_babbler(target: Path, source: Path = BUNDLED_MODEL, seed: int = 7) -> Path:
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.models import qwen3

    target.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(source / name, target / name)
    config = dict(json.loads((source / "config.json").read_text()), tie_word_embeddings=False)
    (target / "config.json").write_text(json.dumps(config, indent=2))
    mx.random.seed(seed)
    model = qwen3.Model(qwen3.ModelArgs.from_dict(config))
    # A zero row gives its token a logit of 0; scaling the others tenfold puts
    # the top logits far above it, so even sampling never picks it.
    special = [added["id"] for added in json.loads((target / "tokenizer.json").read_text())["added_tokens"]]
    weight = model.lm_head.weight * 10
    weight[mx.array(special)] = 0
    model.lm_head.weight = weight
    mx.save_safetensors(str(target / "model.safetensors"), dict(tree_flatten(model.parameters())))
    return target


if __name__ == "__main__":
    print(build_babbler(Path(sys.argv[1])))
