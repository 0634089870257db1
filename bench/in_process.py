"""The limit a benchmark compares Hearth with: mlx-lm's own generation in the benchmark's process.

No queue, no HTTP, no Redis: the same model and tokens, batched by mlx-lm's
BatchGenerator or streamed by stream_generate, prefilled in the chunks
Hearth's worker uses, so the model's work is the same as through Hearth.
"""

from pathlib import Path
import statistics
import time

TOPICS = ["the tide", "a compiler", "bread", "the moon", "rivers", "a library", "snow", "trains", "bees",
          "a lighthouse", "maps", "clocks", "glass", "salt", "bridges", "owls"]


def prompt_of(i: int) -> str:
    return f"Stream {i}: tell me everything about {TOPICS[i % len(TOPICS)]}, at length."


class InProcess:
    """The limit: mlx-lm's own batched generation in this process, on the same tokens."""

    def __init__(self, babbler: Path):
        from workers.engine import Engine

        self.engine = Engine(str(babbler), cache_bytes=0)

    def text_of(self, tokens: int, words: str, salt: str = "") -> str:
        """A user message of about `tokens` tokens once rendered (the template adds a few)."""
        ids = self.engine.encode(salt + (" " + words) * (tokens // max(len(self.engine.encode(words)), 1) + 2))
        return self.engine.tokenizer.decode(ids[:tokens - 10])

    def tokens(self, prompt: str, system: str | None = None) -> list:
        from hearth.contract import GenerationRequest

        request = GenerationRequest(model="b", requested_model="b", max_tokens=1, system=system,
                                    messages=[{"role": "user", "content": prompt}])
        return self.engine.render(request).tokens

    def batch(self, n: int, tokens: int, offset: int = 0) -> dict:
        from mlx_lm.generate import BatchGenerator

        generator = BatchGenerator(self.engine.model, stop_tokens=[], completion_batch_size=max(n, 8))
        prompts = [self.tokens(prompt_of(offset + i)) for i in range(n)]
        started = time.perf_counter()
        uids = generator.insert(prompts, [tokens] * n)
        first = {}
        produced = 0
        while produced < n * tokens:
            for response in generator.next()[1]:
                produced += 1
                first.setdefault(response.uid, time.perf_counter() - started)
        wall = time.perf_counter() - started
        ttfts = [first[uid] for uid in uids]
        return {"tokens_per_s": n * tokens / wall, "ttft_p50": statistics.median(ttfts), "ttft_worst": max(ttfts)}

    def longest_prefill_chunk(self, tokens: list) -> dict:
        """The longest single prefill step of `tokens`, alone, in the worker's chunks (the last, at full context)."""
        from mlx_lm.generate import BatchGenerator

        from hearth.settings import Settings

        chunk = Settings().prefill_chunk
        generator = BatchGenerator(self.engine.model, stop_tokens=[], prefill_step_size=chunk)
        generator.insert([tokens], [1])
        longest = 0.0
        while True:
            started = time.perf_counter()
            _, generated = generator.next()
            longest = max(longest, time.perf_counter() - started)
            if generated:
                return {"tokens": chunk, "longest_s": longest}

    def stream(self, tokens: list, max_tokens: int) -> dict:
        """stream_generate, prefilling in the chunks Hearth's worker uses, so the model's work is the same."""
        from mlx_lm import stream_generate
        from mlx_lm.sample_utils import make_sampler

        from hearth.settings import Settings

        started, arrivals = time.perf_counter(), []
        for _ in stream_generate(self.engine.model, self.engine.tokenizer, tokens, max_tokens=max_tokens,
                                 sampler=make_sampler(temp=0.0), prefill_step_size=Settings().prefill_chunk):
            arrivals.append(time.perf_counter())
        return {"ttft": arrivals[0] - started, "per_token": (arrivals[-1] - arrivals[0]) / (len(arrivals) - 1)}
