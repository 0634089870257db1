"""Weights part of the way from one build to another trained from it (WiSE-FT, Wortsman et al. 2022).

    python scripts/interpolate_weights.py START TUNED SHARE OUT

OUT holds TUNED's files with weights START + SHARE * (TUNED - START): a
fine-tune taken only part of the way often holds up better on requests unlike
its training conversations. Both builds must share a tokenizer and shape
(TUNED built with `build_tiny_model.py --init-from START`).
"""

import argparse
from pathlib import Path
import shutil

import mlx.core as mx


def interpolate(start: dict, tuned: dict, share: float) -> dict:
    if start.keys() != tuned.keys():
        raise SystemExit("the two builds do not have the same weights")
    return {name: start[name] + share * (tuned[name] - start[name]) for name in start}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("start", type=Path)
    parser.add_argument("tuned", type=Path)
    parser.add_argument("share", type=float)
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    if (args.start / "tokenizer.json").read_bytes() != (args.tuned / "tokenizer.json").read_bytes():
        raise SystemExit("the two builds do not share a tokenizer")
    weights = interpolate(mx.load(str(args.start / "model.safetensors")),
                          mx.load(str(args.tuned / "model.safetensors")), args.share)
    shutil.rmtree(args.out, ignore_errors=True)
    shutil.copytree(args.tuned, args.out)
    mx.save_safetensors(str(args.out / "model.safetensors"), weights, metadata={"format": "mlx"})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
