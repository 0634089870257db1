"""One loaded model: render a request with its chat template, decode its tokens, batch its sequences.

This, workers/batch.py and `cache/` glue are the only places that touch MLX. `mlx_lm.load`
takes a local directory or a Hugging Face repo id alike.
"""

from dataclasses import dataclass
import json
import logging
from pathlib import Path
import time

from jinja2 import TemplateError
from mlx_lm import load

from cache.block_index import common_prefix_length
from cache.block_store import BlockStore, model_cache_dir
from cache.prompt_cache import PromptCache
from hearth.contract import GenerationRequest
from workers.answer_guard import AnswerGuard
from workers.batch import ModelBatch, can_batch
from workers.sampling import Sampling
from workers.solo_batch import SoloBatch
from workers.tool_calls import tool_format_of
from workers.tool_guide import TOOL_OPEN, ToolGuides, single_token

log = logging.getLogger(__name__)

WARM_UP_TOOLS = [{"type": "function", "function": {"name": "warm_up", "parameters": {"type": "object"}}}]


@dataclass
class RenderedPrompt:
    tokens: list
    # The template left `<think>` open, so output starts inside thinking.
    opens_in_thinking: bool
    # Tokens of the static segment (system prompt and tools); 0 when not computed.
    static_tokens: int = 0


class TextDecoder:
    """Tokens to text across generation segments: one mlx-lm streaming detokenizer for a whole answer.

    A fresh detokenizer per generation segment would drop text still held back
    (half a UTF-8 character, a lone space) and trim the leading space of the
    next segment. A continuation (after a thinking budget or a suspension)
    keeps decoding with this one; a suspended job keeps its `state()` and a
    resumed one starts from it, exactly where it was.
    """

    def __init__(self, new_detokenizer, state: dict | None = None):
        self._new_detokenizer = new_detokenizer
        self._detokenizer = new_detokenizer()
        vars(self._detokenizer).update(state or {})

    def add(self, token: int) -> str:
        self._detokenizer.add_token(token)
        return self._detokenizer.last_segment

    def flush(self) -> str:
        self._detokenizer.finalize()
        return self._detokenizer.last_segment

    def state(self) -> dict:
        """What this detokenizer holds that a new one does not (its vocabulary tables are shared)."""
        blank = vars(self._new_detokenizer())
        return {name: value for name, value in vars(self._detokenizer).items() if value is not blank.get(name)}


def _max_new_tokens(name: str) -> int | None:
    """A local model directory may cap its output in generation_config.json (Hugging Face's file).

    The bundled tiny model does: it was trained on short conversations and,
    deep into a 20K-token Claude Code prompt, may ramble before it ends its turn.
    """
    path = Path(name) / "generation_config.json"
    if not path.is_file():
        return None
    value = json.loads(path.read_text()).get("max_new_tokens")
    return value if isinstance(value, int) and value > 0 else None


class Engine:
    def __init__(self, name: str, cache_bytes: int, cache_dir: str = "", tools_first: bool = True):
        started = time.perf_counter()
        self.name = name
        self.model, self.tokenizer = load(name)
        self.prompt_cache = PromptCache(self.model, cache_bytes)
        self.tool_format = tool_format_of(self.tokenizer.chat_template)
        self.max_new_tokens = _max_new_tokens(name)
        # Positions the model was made for (None if its config does not say).
        self.context_window = getattr(getattr(self.model, "args", None), "max_position_embeddings", None)
        self.batchable = can_batch(self.model)
        if not self.batchable:
            log.warning("model %s: its cache layers cannot merge into a batch; it decodes one sequence at a time, "
                        "beside the other models' batches", name)
        self._tools_first = tools_first
        self.tool_guides = self._tool_guides()
        self.tool_call_token = single_token(self.tokenizer, TOOL_OPEN)  # never drawn when no tools are offered
        self.answer_guard = AnswerGuard.for_tokenizer(self.tokenizer)  # None for a model that does not think
        # The cache's blocks reach disk as they are made: a worker that crashed comes back warm.
        self.block_store = BlockStore(model_cache_dir(cache_dir, name), name) if cache_dir else None
        if self.block_store:
            self.block_store.attach(self.prompt_cache)
        self._warm_up()
        log.info("loaded model %s in %.1fs", name, time.perf_counter() - started)

    def _tool_guides(self) -> ToolGuides | None:
        """Its tool calls held to their grammar (workers/tool_guide.py), if llguidance can read its tokenizer."""
        vocab_size = getattr(getattr(self.model, "args", None), "vocab_size", None) or len(self.tokenizer.vocab)
        try:
            return ToolGuides(self.tokenizer, self.tool_format, vocab_size)
        except (ValueError, AttributeError) as exc:
            log.warning("model %s: its tool calls go unguided (llguidance cannot read its tokenizer: %s)",
                        self.name, exc)
            return None

    def tool_guide(self, request: GenerationRequest, in_thinking: bool):
        """A logits processor holding this request's tool calls to its tools' grammar, or None."""
        if self.tool_guides is None:
            return None
        return self.tool_guides.guide(request.tools_to_call(), in_thinking, must_call=request.tool_required,
                                      may_think=request.enable_thinking)

    def save_cache(self):
        """Wait for the blocks made so far to reach disk (they are written as they are made)."""
        if self.block_store:
            self.block_store.flush()

    def _warm_up(self):
        """MLX builds its kernels on first use: pay for it here, not in the first request.

        Through the path requests take (a batch, a prompt prefilled from the cache, a few
        steps), beside a scratch prompt cache that is thrown away.
        """
        batch = self.batch(2, 512, prompt_cache=PromptCache(self.model, 1 << 24))
        prompt = self.encode("Hello, warming up the kernels for the first request of the day.")
        # With a tool offered, as Claude Code's requests come: the path of a guided sequence too.
        guide = self.tool_guides.guide(WARM_UP_TOOLS, in_thinking=False) if self.tool_guides else None
        batch.add("warm-up", prompt, Sampling(temperature=0.0), 4, guide=guide)
        batch.add("warm-up too", prompt[:8], Sampling(temperature=0.7, may_call_tools=False), 4)
        while len(batch):
            batch.step()

    def render(self, request: GenerationRequest) -> RenderedPrompt:
        text = self._template(self._layout(request) + list(request.messages), request, add_generation_prompt=True)
        tokens = self.encode(text)
        static = 0 if self.prompt_cache.blockwise else self._static_segment(request, tokens)
        return RenderedPrompt(tokens=tokens, opens_in_thinking=text.rstrip().endswith("<think>"),
                              static_tokens=static)

    def _layout(self, request: GenerationRequest) -> list:
        """The leading system turns: tools first, then the conversation's own system prompt.

        Anthropic caches tools, then system, then messages. Qwen3's templates
        write the system prompt before the tools, so a subagent with its own
        system prompt would share nothing with the main conversation; with the
        tools in a leading system turn of their own, every conversation that
        offers the same tools shares that (~16K-token) prefix.
        """
        if not request.system:
            return []
        if request.tools and self._tools_first:
            return [{"role": "system", "content": ""}, {"role": "system", "content": request.system}]
        return [{"role": "system", "content": request.system}]

    def _template(self, messages: list, request: GenerationRequest, add_generation_prompt: bool) -> str:
        try:
            return self.tokenizer.apply_chat_template(messages, tools=request.tools or None, tokenize=False,
                                                      add_generation_prompt=add_generation_prompt,
                                                      enable_thinking=request.enable_thinking)
        except TemplateError:
            if not self._tools_first or not request.tools:
                raise
            # This template refuses a second system turn: use the usual order from now on.
            log.warning("model %s: chat template rejects tools before the system prompt", self.name)
            self._tools_first = False
            return self._template(self._layout(request) + list(request.messages), request, add_generation_prompt)

    def _static_segment(self, request: GenerationRequest, tokens: list) -> int:
        """Where system and tools end: the prompt's common prefix with one whose only turn is empty."""
        probe = self.encode(self._template(self._layout(request) + [{"role": "user", "content": ""}], request, False))
        return common_prefix_length(probe, tokens)

    def encode(self, text: str) -> list:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def decoder(self, state: dict | None = None) -> TextDecoder:
        # Each access to `detokenizer` is a new copy, reset, sharing the vocabulary tables.
        return TextDecoder(lambda: self.tokenizer.detokenizer, state)

    def batch(self, max_sequences: int, prefill_chunk: int, prompt_cache: PromptCache | None = None):
        """A batch to decode this model's sequences together (see workers/batch.py)."""
        if self.batchable:
            return ModelBatch(self, max_sequences, prefill_chunk, prompt_cache)
        return SoloBatch(self, prefill_chunk, prompt_cache)
