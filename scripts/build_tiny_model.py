"""Build the tiny Qwen3-architecture model that Hearth ships and tests with.

    python scripts/build_tiny_model.py --read-steps 3000 --long-share 0.05 --result-share 0.3  # models/hearth-tiny
    python scripts/build_tiny_model.py --variant coder --init-from models/hearth-tiny --iters 400

Two variants cover both tool-call formats: `qwen3` (models/hearth-tiny) thinks
in `<think>` (or, with thinking off, answers after the template's empty think
block) and calls tools in Qwen3's JSON; `coder` (models/hearth-tiny-coder)
uses Qwen3-Coder's template: no thinking, XML tool calls.

Three steps (four with reading), all deterministic for the committed files and seeds:
1. a byte-level BPE tokenizer trained with `tokenizers` on
   `models/tokenizer_corpus.txt` (English, Python and JSON, so token counts
   resemble a real tokenizer's) and the frozen conversations of
   `models/tokenizer_conversations.jsonl`, with Qwen3's special tokens;
2. a 2-layer Qwen3 model (2 layers, not 1: a 1-layer model prefills for free
   on MLX and would make cache benchmarks meaningless), or another build's
   weights (`--init-from`), grown when `--layers` asks for more than it has:
   the new layers start as the identity, so the bigger model starts from
   what the smaller one read and learnt;
3. optionally, reading (`--read-steps N`): language-model training on the docstrings of this Python
   and the packages installed beside it (`pretraining_corpus.py`, every
   paragraph holding a held-out request's phrasing, tool name, command or
   address left out), so that words the conversations never show mean
   something to it;
4. a full fine-tune with mlx-lm's trainer on synthetic conversations
   (`tiny_model_data.py`), half thinking, half not, so that it thinks when
   asked to and only then, answers briefly, calls a tool when asked to act,
   and ends its turn with `<|im_end|>`; optionally (`--long-share`) a share
   of them made Claude Code-sized (`long_prompts.py`), so that its manners
   hold deep in a long prompt, and (`--result-share`) more of those that stop
   at a call going on to its result and a reply in words. The committed
   `hearth-tiny` was built with all three, as the first line above.

On Linux, the `mlx[cpu]` wheel carries the reference BLAS, and its matrix
products are some 50 times slower than OpenBLAS's on this model's shapes.
With Debian's OpenBLAS preloaded (`apt-get install libopenblas0-pthread`),
a build takes about a seventh of the time (16 minutes on two cores
without reading or long conversations; with the first line's options,
about 35 minutes of reading and 35 of chat training, BENCHMARKS.md):

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3 python scripts/build_tiny_model.py ...

Another BLAS sums in another order, so its weights differ in their last
bits; with either, two builds are identical. What the model reads depends
on what is installed, so a build that reads is repeatable only on its
machine.
`--refresh-corpus` rewrites the corpus from this Python's standard library.
"""

import argparse
from functools import partial
import json
from pathlib import Path
import shutil
import sys
import sysconfig

import mlx.core as mx
import mlx.optimizers as optim
from mlx.utils import tree_flatten
import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

sys.path.insert(0, str(Path(__file__).parent))
import long_prompts
import pretraining_corpus
import tiny_model_data

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "models" / "tokenizer_corpus.txt"
# Chat-formatted JSON for the tokenizer, one conversation a line: frozen, so
# that a change to the training conversations leaves the tokenizer (and every
# token count measured with it) as it is.
CONVERSATIONS = ROOT / "models" / "tokenizer_conversations.jsonl"
TEMPLATES = {"qwen3": Path(__file__).parent / "qwen3_chat_template.jinja",
             "coder": Path(__file__).parent / "qwen3_coder_chat_template.jinja"}
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# Qwen3 keeps these as added (non-special) tokens: they decode as text.
ADDED_TOKENS = ["<think>", "</think>", "<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>"]
STDLIB_MODULES = [
    "argparse.py", "textwrap.py", "subprocess.py", "pathlib.py", "json/__init__.py", "json/decoder.py",
    "http/server.py", "logging/__init__.py", "asyncio/streams.py", "unittest/case.py", "shutil.py",
    "tempfile.py", "dataclasses.py", "functools.py", "email/message.py", "urllib/parse.py", "csv.py",
]
VOCAB_SIZE = 8192
MODEL_CONFIG = {
    "model_type": "qwen3",
    "architectures": ["Qwen3ForCausalLM"],
    "hidden_size": 128,
    "num_hidden_layers": 2,
    "intermediate_size": 384,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 32,
    "rms_norm_eps": 1e-6,
    "vocab_size": VOCAB_SIZE,
    "max_position_embeddings": 65536,
    "rope_theta": 1000000.0,
    "tie_word_embeddings": True,
}


def refresh_corpus():
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    parts = [(stdlib / name).read_text(encoding="utf-8") for name in STDLIB_MODULES]
    parts.append(tiny_model_data.tools_json())
    CORPUS.write_text("\n\n".join(parts), encoding="utf-8")


def train_tokenizer(out, variant):
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE - len(SPECIAL_TOKENS) - len(ADDED_TOKENS),
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    conversations = CONVERSATIONS.read_text(encoding="utf-8").splitlines()
    tokenizer.train_from_iterator([CORPUS.read_text(encoding="utf-8"), *conversations], trainer)
    tokenizer.add_tokens(ADDED_TOKENS)
    tokenizer.save(str(out / "tokenizer.json"))
    vocab = tokenizer.get_vocab()
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": MODEL_CONFIG["max_position_embeddings"],
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "chat_template": TEMPLATES[variant].read_text(encoding="utf-8"),
        "clean_up_tokenization_spaces": False,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return vocab


# A cap on each answer: trained on short conversations, the model may ramble
# deep into a 20K-token Claude Code prompt before it ends its turn.
MAX_NEW_TOKENS = 256


def write_config(out, vocab):
    config = dict(MODEL_CONFIG, eos_token_id=[vocab["<|im_end|>"], vocab["<|endoftext|>"]])
    (out / "config.json").write_text(json.dumps(config, indent=2))
    (out / "generation_config.json").write_text(json.dumps({"max_new_tokens": MAX_NEW_TOKENS}, indent=2))


def init_weights(out, init_from=None):
    """Random weights, or another build's (same tokenizer) to fine-tune from, grown if it has fewer layers."""
    if init_from is not None:
        if (init_from / "tokenizer.json").read_bytes() != (out / "tokenizer.json").read_bytes():
            sys.exit(f"--init-from {init_from}: its tokenizer differs from the one just trained")
        layers = json.loads((init_from / "config.json").read_text())["num_hidden_layers"]
        if layers < MODEL_CONFIG["num_hidden_layers"]:
            grow(init_from, layers, out)
        else:
            shutil.copy(init_from / "model.safetensors", out / "model.safetensors")
        return
    from mlx_lm.models import qwen3

    mx.random.seed(0)
    model = qwen3.Model(qwen3.ModelArgs.from_dict(MODEL_CONFIG))
    mx.save_safetensors(str(out / "model.safetensors"), dict(tree_flatten(model.parameters())))


def grow(init_from, layers, out):
    """A smaller build's weights with layers added on top, each starting as the identity (its
    attention's and MLP's output projections zero, so it adds nothing to the residual stream):
    the grown model answers as the smaller one did until training moves the new layers. It
    starts from what the smaller one read, rather than reading again (which also depends on the
    machine: pretraining_corpus.py)."""
    from mlx_lm.models import qwen3

    mx.random.seed(0)
    model = qwen3.Model(qwen3.ModelArgs.from_dict(MODEL_CONFIG))
    weights = dict(tree_flatten(model.parameters()))
    smaller = mx.load(str(init_from / "model.safetensors"))
    assert set(smaller) <= set(weights), sorted(set(smaller) - set(weights))
    weights.update(smaller)
    for layer in range(layers, MODEL_CONFIG["num_hidden_layers"]):
        for name in ("self_attn.o_proj.weight", "mlp.down_proj.weight"):
            key = f"model.layers.{layer}.{name}"
            weights[key] = mx.zeros_like(weights[key])
    mx.save_safetensors(str(out / "model.safetensors"), weights)


# Reading (--read-steps): what words mean, from text, before the chat training.
READING_BATCH, READING_LENGTH = 16, 256
READING_LEARNING_RATE, READING_WARMUP = 3e-3, 50


def reading_loss(model, rows):
    """Next-token loss on text, scored at every fourth position: the 8192-way output layer
    is most of a step's cost on a CPU, and every position still reads its whole context."""
    from mlx import nn

    hidden = model.model(rows[:, :-1])[:, 3::4]
    logits = model.model.embed_tokens.as_linear(hidden)
    return nn.losses.cross_entropy(logits, rows[:, 1:][:, 3::4]).mean()


def read(out, steps):
    """Language-model training on the docstrings corpus, from the weights in `out`."""
    from mlx import nn
    from mlx_lm.models import qwen3

    tokens = np.array(pretraining_corpus.corpus_tokens(Tokenizer.from_file(str(out / "tokenizer.json"))),
                      dtype=np.int32)
    print(f"reading {len(tokens)} tokens of docstrings for {steps} steps")
    model = qwen3.Model(qwen3.ModelArgs.from_dict(MODEL_CONFIG))
    model.load_weights(str(out / "model.safetensors"))
    schedule = optim.join_schedules([optim.linear_schedule(0, READING_LEARNING_RATE, READING_WARMUP),
                                     optim.cosine_decay(READING_LEARNING_RATE, steps, READING_LEARNING_RATE / 10)],
                                    [READING_WARMUP])
    optimizer = optim.AdamW(learning_rate=schedule, weight_decay=0.0)
    loss_and_grad = nn.value_and_grad(model, reading_loss)
    rng = np.random.default_rng(0)
    for step in range(1, steps + 1):
        offsets = rng.integers(0, len(tokens) - READING_LENGTH - 1, READING_BATCH)
        loss, grads = loss_and_grad(model, mx.array(np.stack([tokens[o:o + READING_LENGTH + 1] for o in offsets])))
        optimizer.update(model, grads)
        mx.eval(model.parameters(), optimizer.state, loss)
        if step % 100 == 0:
            print(f"reading step {step}: loss {loss.item():.3f}", flush=True)
    mx.save_safetensors(str(out / "model.safetensors"), dict(tree_flatten(model.parameters())))


# With --long-share, conversations made Claude Code-sized (long_prompts.py) run to 4.3K tokens.
MAX_SEQ_LENGTH = 4608
ANSWER_WINDOW = 96
# An answer's first tokens decide it (a call or text; a thought about acting or about a
# question): weighted above the rest, so that the decision is learnt from the request's
# shape rather than from the words of the training conversations.
DECISION_TOKENS, DECISION_WEIGHT = 8, 3.0
ITERS = 1200
LEARNING_RATE = 3e-3


def answer_window_loss(model, batch, lengths, decision_weight=DECISION_WEIGHT):
    """mlx-lm's `default_loss`, with the output layer applied only where the loss counts
    and the answer's first DECISION_TOKENS weighted.

    With the prompt masked, the 8192-way output layer over every prompt
    position is most of a step's cost on a CPU; the answer sits in a window
    after each example's prompt offset, so gather that window first.
    """
    from mlx import nn

    inputs, targets = batch[:, :-1], batch[:, 1:]
    hidden = model.model(inputs)
    width = min(ANSWER_WINDOW, inputs.shape[1])
    starts = mx.maximum(lengths[:, 0:1] - 1, 0)
    positions = mx.minimum(starts + mx.arange(width)[None], inputs.shape[1] - 1)
    picked = mx.take_along_axis(hidden, positions[..., None], axis=1)
    logits = model.model.embed_tokens.as_linear(picked)
    steps = positions + 1
    mask = mx.logical_and(steps >= lengths[:, 0:1], steps <= lengths[:, 1:])
    mask = mx.logical_and(mask, mx.arange(width)[None] < (lengths[:, 1:] - starts))
    weights = mask * mx.where(steps < lengths[:, 0:1] + DECISION_TOKENS, decision_weight, 1.0)
    ce = nn.losses.cross_entropy(logits, mx.take_along_axis(targets, positions, axis=1)) * weights
    return ce.astype(mx.float32).sum() / weights.sum(), mask.sum()


def chat_turns(examples, tokenizer):
    """mlx-lm's ChatDataset with two changes: each example says whether it thinks
    (Qwen3's `enable_thinking`), and its last turn is tokenized apart from the
    prompt, as at inference (BPE would merge the `</think>\n\n` that ends a
    thinking-off prompt with the answer's first word)."""
    from mlx_lm.tuner.datasets import ChatDataset

    class ChatTurns(ChatDataset):
        def process(self, example):
            messages = example["messages"]
            options = {"tools": example["tools"], "tokenize": False, "enable_thinking": example["thinking"]}
            whole = self.tokenizer.apply_chat_template(messages, **options)
            prompt = self.tokenizer.apply_chat_template(messages[:-1], add_generation_prompt=True, **options)
            assert whole.startswith(prompt), (prompt, whole)
            head = self.tokenizer.encode(prompt, add_special_tokens=False)
            return head + self.tokenizer.encode(whole[len(prompt):], add_special_tokens=False), len(head)

    turns = ChatTurns(examples, tokenizer, mask_prompt=True)
    return [turns.process(example) for example in examples]


def training_conversations(variant, long_share=0.0, result_share=0.0):
    examples = long_prompts.lengthen_some(tiny_model_data.chat_examples(seed=2, count=8000, variant=variant),
                                          long_share, seed=4)
    return tiny_model_data.going_on_after_results(examples, result_share, seed=11)


def fine_tune(out, iters, variant, learning_rate=LEARNING_RATE, long_share=0.0, result_share=0.0,
              decision_weight=DECISION_WEIGHT):
    from mlx_lm import load
    from mlx_lm.tuner.trainer import TrainingArgs, train

    mx.random.seed(0)
    np.random.seed(0)  # mlx-lm's batch iterator shuffles with numpy
    model, tokenizer = load(str(out))
    train_set = chat_turns(training_conversations(variant, long_share, result_share), tokenizer)
    valid_set = chat_turns(tiny_model_data.chat_examples(seed=3, count=64, variant=variant), tokenizer)
    args = TrainingArgs(
        batch_size=8, iters=iters, val_batches=4, steps_per_report=25, steps_per_eval=iters,
        steps_per_save=iters + 1, max_seq_length=MAX_SEQ_LENGTH, adapter_file=str(out / "unused.safetensors"),
    )
    optimizer = optim.AdamW(learning_rate=optim.cosine_decay(learning_rate, iters, learning_rate / 10),
                            weight_decay=0.0)
    model.train()
    train(model, optimizer, train_set, valid_set, args=args,
          loss=partial(answer_window_loss, decision_weight=decision_weight))
    (out / "unused.safetensors").unlink(missing_ok=True)
    # float32: on a CPU, bfloat16 matmuls are slower, and the file is only ~6 MB.
    mx.save_safetensors(str(out / "model.safetensors"), dict(tree_flatten(model.parameters())), metadata={"format": "mlx"})


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", choices=sorted(TEMPLATES), default="qwen3")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--iters", type=int, default=ITERS)
    parser.add_argument("--learning-rate", type=float, default=LEARNING_RATE)
    parser.add_argument("--refresh-corpus", action="store_true")
    parser.add_argument("--init-from", type=Path,
                        help="start from this build's weights (same tokenizer), grown if it has fewer layers")
    parser.add_argument("--layers", type=int, default=MODEL_CONFIG["num_hidden_layers"])
    parser.add_argument("--read-steps", type=int, default=0,
                        help="first read docstrings for this many steps (pretraining_corpus.py)")
    parser.add_argument("--long-share", type=float, default=0.0,
                        help="the share of conversations made Claude Code-sized (long_prompts.py)")
    parser.add_argument("--result-share", type=float, default=0.0,
                        help="the share of those stopping at a call that also go on, in a copy, after its result")
    parser.add_argument("--decision-weight", type=float, default=DECISION_WEIGHT,
                        help="the loss weight of an answer's first DECISION_TOKENS")
    args = parser.parse_args()
    MODEL_CONFIG["num_hidden_layers"] = args.layers
    args.out = args.out or ROOT / "models" / ("hearth-tiny" if args.variant == "qwen3" else "hearth-tiny-coder")
    if args.refresh_corpus or not CORPUS.exists():
        refresh_corpus()
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    vocab = train_tokenizer(args.out, args.variant)
    write_config(args.out, vocab)
    init_weights(args.out, args.init_from)
    if args.read_steps:
        read(args.out, args.read_steps)
    fine_tune(args.out, args.iters, args.variant, args.learning_rate, args.long_share, args.result_share,
              args.decision_weight)
    print(f"built {args.out}")


if __name__ == "__main__":
    main()
