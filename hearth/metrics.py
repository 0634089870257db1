"""Hearth's Prometheus metrics: counted by the workers, kept in Redis, exposed by any API process.

Counters and histograms live in one Redis hash (METRICS_KEY) of
`name|label=value,...` -> running total. A worker tallies as it goes and adds
its tally with HINCRBYFLOAT on the round trip it makes every few
milliseconds anyway. At scrape time the API reads the hash, and Redis's own
state for the gauges (hearth/status.py), and renders them with
prometheus-client. So every API process (gunicorn may run several, on
several hosts) serves the same figures, with no multiprocess directory to
share, and a worker's counts outlive its restart.

Names follow vLLM's where one exists (`vllm:time_to_first_token_seconds`,
`vllm:inter_token_latency_seconds`), with the `hearth_` prefix; labels stay
bounded: queue, served model, outcome, source.
"""

from collections import defaultdict
import time

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from hearth.contract import METRICS_KEY, THROUGHPUT_KEY

COUNTERS = {
    "hearth_jobs_total": "Message jobs ended, by queue, served model and outcome (finished, failed, cancelled).",
    "hearth_prompt_tokens_total": "Prompt tokens, by served model and source: prefilled, or cached (read from the prompt cache).",
    "hearth_generation_tokens_total": "Tokens generated, by served model.",
    "hearth_suspensions_total": "Background jobs that stepped aside for interactive work, by served model.",
}
HISTOGRAMS = {
    "hearth_time_to_first_token_seconds": (
        "From enqueue to the first token, by served model and queue.",
        (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)),
    "hearth_time_per_output_token_seconds": (
        "Between two tokens of a job, by served model and queue.",
        (0.005, 0.01, 0.02, 0.04, 0.08, 0.15, 0.3, 0.6, 1.0, 2.5)),
    "hearth_queue_wait_seconds": (
        "From enqueue to admission by a worker, by queue.",
        (0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 1800.0)),
}


def field(name: str, **labels) -> str:
    return name + "|" + ",".join(f"{key}={value}" for key, value in sorted(labels.items()))


def parse_field(raw: str) -> tuple[str, dict]:
    name, _, labels = raw.partition("|")
    return name, dict(pair.split("=", 1) for pair in labels.split(",") if pair)


# Seconds of throughput history kept (per worker entries, for the status page's chart).
THROUGHPUT_HISTORY = 20 * 60


class Tally:
    """What a worker has counted since its last round trip to Redis."""

    def __init__(self):
        self._fields = defaultdict(float)
        self._throughput: list = []  # (unix second, tokens generated in it)
        self._second, self._tokens = int(time.time()), 0

    def __bool__(self):
        self.close_second()
        return bool(self._fields or self._throughput)

    def generated(self, tokens: int = 1):
        """Tokens generated now, for the per-second throughput series."""
        self.close_second()
        self._tokens += tokens

    def close_second(self, now: bool = False):
        """The tokens of a second that has ended (or, `now`, of this one so far) join the series."""
        second = int(time.time())
        if second != self._second or now:
            if self._tokens:
                self._throughput.append((self._second, self._tokens))
            self._second, self._tokens = second, 0

    def add(self, name: str, value: float = 1.0, **labels):
        self._fields[field(name, **labels)] += value

    def observe(self, name: str, seconds: float, **labels):
        """One observation of a histogram: its cumulative buckets, sum and count."""
        for bound in HISTOGRAMS[name][1]:
            if seconds <= bound:
                self._fields[field(name + "_bucket", le=bound, **labels)] += 1
        self._fields[field(name + "_bucket", le="+Inf", **labels)] += 1
        self._fields[field(name + "_sum", **labels)] += seconds

    def queue(self, pipe):
        """Add the tally to a pipeline (one HINCRBYFLOAT a field); `clear()` once it has gone."""
        for name, value in self._fields.items():
            pipe.hincrbyfloat(METRICS_KEY, name, value)
        if self._throughput:
            pipe.rpush(THROUGHPUT_KEY, *(f"{second} {tokens}" for second, tokens in self._throughput))
            pipe.ltrim(THROUGHPUT_KEY, -THROUGHPUT_HISTORY, -1)

    def clear(self):
        self._fields.clear()
        self._throughput.clear()


class JobMeter:
    """One job's figures, into the worker's tally: prompt tokens, time to first token, time per token."""

    def __init__(self, tally: Tally, model: str, queue: str, enqueued_at: float, resumed: bool = False):
        self._tally, self._model, self._queue = tally, model, queue
        self._enqueued_at = enqueued_at
        self._last_token = time.time() if resumed else None  # a resumed job's first token is not its first

    def prefilled(self, prompt_tokens: int, cached: int):
        self._tally.add("hearth_prompt_tokens_total", prompt_tokens - cached, model=self._model, source="prefilled")
        self._tally.add("hearth_prompt_tokens_total", cached, model=self._model, source="cached")

    def token(self):
        now = time.time()
        labels = {"model": self._model, "queue": self._queue}
        if self._last_token is None:
            self._tally.observe("hearth_time_to_first_token_seconds", now - self._enqueued_at, **labels)
        else:
            self._tally.observe("hearth_time_per_output_token_seconds", now - self._last_token, **labels)
        self._last_token = now
        self._tally.add("hearth_generation_tokens_total", model=self._model)
        self._tally.generated()


def families(totals: dict) -> list:
    """prometheus-client metric families from the hash's totals (names and values as str)."""
    counters = defaultdict(list)  # name -> [(labels, value)]
    histograms = {name: defaultdict(lambda: {"buckets": {}, "sum": 0.0}) for name in HISTOGRAMS}
    for raw, value in totals.items():
        name, labels = parse_field(raw)
        if name in COUNTERS:
            counters[name].append((labels, float(value)))
            continue
        histogram, _, part = name.rpartition("_")
        if histogram in HISTOGRAMS:
            bound = labels.pop("le", None)
            entry = histograms[histogram][tuple(sorted(labels.items()))]
            if part == "bucket":
                entry["buckets"][bound] = float(value)
            elif part == "sum":
                entry["sum"] = float(value)
    out = []
    for name, text in COUNTERS.items():
        samples = counters.get(name, [])
        family = CounterMetricFamily(name, text, labels=sorted(samples[0][0]) if samples else [])
        for labels, value in samples:
            family.add_metric([labels[key] for key in sorted(labels)], value)
        out.append(family)
    for name, (text, bounds) in HISTOGRAMS.items():
        entries = histograms[name]
        names = [key for key, _ in next(iter(entries))] if entries else []
        family = HistogramMetricFamily(name, text, labels=names)
        for labels, entry in entries.items():
            buckets = [(str(bound), entry["buckets"].get(str(bound), 0.0)) for bound in bounds]
            buckets.append(("+Inf", entry["buckets"].get("+Inf", 0.0)))
            family.add_metric([value for _, value in labels], buckets, entry["sum"])
        out.append(family)
    return out


def gauge(name: str, text: str, samples: dict, label: str | None = None) -> GaugeMetricFamily:
    """A gauge from {label value: value} (or {None: value} without a label)."""
    family = GaugeMetricFamily(name, text, labels=[label] if label else None)
    for key, value in samples.items():
        family.add_metric([key] if label else [], value)
    return family
