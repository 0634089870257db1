"""Find `stop_sequences` in streamed text without ever emitting part of one."""


class StopSequenceMatcher:
    def __init__(self, stop_sequences):
        self._stops = [s for s in stop_sequences or [] if s]
        self._pending = ""
        self.matched: str | None = None

    def feed(self, piece: str) -> str:
        """Text that is safe to emit now. After a match, `matched` is set and the rest is dropped."""
        if not self._stops:
            return piece
        self._pending += piece
        hits = [(self._pending.find(s), s) for s in self._stops]
        hits = [(pos, s) for pos, s in hits if pos >= 0]
        if hits:
            pos, self.matched = min(hits)
            safe, self._pending = self._pending[:pos], ""
            return safe
        keep = max((self._partial_suffix(s) for s in self._stops), default=0)
        safe = self._pending[: len(self._pending) - keep]
        self._pending = self._pending[len(safe):]
        return safe

    def flush(self) -> str:
        rest, self._pending = self._pending, ""
        return rest

    def _partial_suffix(self, stop: str) -> int:
        for size in range(min(len(stop) - 1, len(self._pending)), 0, -1):
            if self._pending.endswith(stop[:size]):
                return size
        return 0
