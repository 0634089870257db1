"""Text for the bundled model to read before its chat training: docstrings.

The docstrings of this Python's standard library and of the packages installed
beside it, paragraph by paragraph, less every paragraph that holds something
the held-out requests are made of (a phrasing, a tool or parameter name, a
command, an address), so that scripts/evaluate_tiny_model.py still measures
requests the model never saw. The held-out verbs and subjects stay in, as the
ordinary English words they are: a pretrained model has read them too, and
knowing them is what the synthetic conversations cannot teach.

What it reads depends on the machine (the Python version, the packages
installed), so a build that uses it is deterministic only on that machine.
"""

import ast
from pathlib import Path
import re
import sysconfig

import tiny_model_data
from tiny_model_words import HELD_OUT

# The held-out commands and addresses, in pieces a docstring might hold.
HELD_OUT_COMMANDS_AND_HOSTS = ("cargo test", "docker ps", "go vet", "du -sh", "npm run lint", "ruff check",
                               "top -bn1", "rust-lang.org", "news.ycombinator", "pypi.org", "127.0.0.1:9000",
                               "simple/rq", "en/latest")
SHORTEST_DOCSTRING = 41  # shorter ones are mostly "Return self." and the like


def held_out_strings():
    """Everything a held-out request is made of, except its single ordinary words."""
    strings = set(HELD_OUT_COMMANDS_AND_HOSTS) | set(HELD_OUT.greetings)
    for verb, noun, _ in HELD_OUT.actions:
        # Compound tool names; a name that is the bare verb ("Tail") is an ordinary word.
        strings.update(name for style in tiny_model_data.NAME_STYLES
                       if (name := style(verb, noun)).lower() != verb)
        strings.update(f"mcp__{server}__{verb}_{noun}" for server in HELD_OUT.mcp_servers)
    for names in HELD_OUT.parameters.values():
        # Those that are not ordinary words ("base_dir", "filepath"); "location" or "root" stay.
        strings.update(n for n in names if "_" in n or n in ("filepath", "href", "uri"))
    for template in HELD_OUT.requests + HELD_OUT.pair_requests + HELD_OUT.questions:
        # A phrasing's words around its slots ("Go ahead and", "in plain words"); one word alone stays.
        strings.update(part for piece in re.split(r"\{\w+\}", template)
                       if " " in (part := piece.strip(" .?")))
    return sorted(strings)


def _docstrings(root: Path, skip=()):
    for path in sorted(root.rglob("*.py")):
        if {"test", "tests"} & set(path.parts) or any(part in path.parts for part in skip):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc and len(doc) >= SHORTEST_DOCSTRING:
                    yield doc


def held_out_matcher():
    """A test of a paragraph: does it hold a held-out string (as whole words, in any case)?"""
    pattern = re.compile("|".join(rf"(?<!\w){re.escape(s.lower())}(?!\w)" for s in held_out_strings()))
    return lambda paragraph: pattern.search(paragraph.lower()) is not None


def paragraphs():
    """Each distinct docstring paragraph that holds no held-out string."""
    holds_held_out = held_out_matcher()
    paths = sysconfig.get_paths()
    docs = [*_docstrings(Path(paths["stdlib"]), skip=("site-packages",)), *_docstrings(Path(paths["purelib"]))]
    seen = set()
    for doc in docs:
        for paragraph in doc.split("\n\n"):
            if paragraph not in seen and not holds_held_out(paragraph):
                seen.add(paragraph)
                yield paragraph


def corpus_tokens(tokenizer) -> list[int]:
    """The paragraphs as one run of token ids, `<|endoftext|>` between them (`tokenizer`: a `tokenizers.Tokenizer`)."""
    return tokenizer.encode("<|endoftext|>".join(paragraphs())).ids
