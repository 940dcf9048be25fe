"""Progress of a run for people: a bar on a terminal, a line per tenth of the run in a log."""

import sys
import time

class LogProgress:
    """Progress for logs (no terminal): one line per tenth of the run with step, loss, tokens/s and ETA."""

    def __init__(self, total: int, initial: int, enabled: bool):
        self.total, self.n, self.enabled = total, initial, enabled
        self.every = max(1, total // 10)
        self.start, self.start_n, self.postfix = time.perf_counter(), initial, {}

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.enabled and (self.n % self.every == 0 or self.n == self.total):
            rate = (self.n - self.start_n) / max(time.perf_counter() - self.start, 1e-9)
            eta = (self.total - self.n) / rate if rate else float("inf")
            fields = " ".join(f"{k} {v}" for k, v in self.postfix.items())
            print(f"train: step {self.n}/{self.total} {fields} eta {eta:,.0f}s", file=sys.stderr, flush=True)

    def set_postfix(self, refresh: bool = False, **fields) -> None:
        self.postfix = fields

    def close(self) -> None:
        pass


def progress_bar(total: int, initial: int, enabled: bool):
    """A progress bar (step, loss, tokens/s, ETA) on a terminal; a plain line per tenth of the run in a log."""
    if not sys.stderr.isatty():
        return LogProgress(total, initial, enabled)
    from tqdm.auto import tqdm
    return tqdm(total=total, initial=initial, disable=not enabled, desc="train", unit="step", file=sys.stderr,
                dynamic_ncols=True, mininterval=0.5)
