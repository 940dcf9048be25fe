"""Progress of a run for people: a bar on a terminal, a line per tenth of the run in a log; step, loss, learning
rate, tokens/s, eval loss and the time left in hours and minutes."""

import math
import sys
import time


def human_duration(seconds: float) -> str:
    """45s, 3m 05s, 2h 07m, 3d 04h: the two largest units, for an ETA a person reads at a glance."""
    if not math.isfinite(seconds):
        return "unknown"
    s = max(0, round(seconds))
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if days:
        return f"{days}d {hours:02d}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {s:02d}s"
    return f"{s}s"


def step_fields(loss: float, lr: float, tokens_per_second: float, eval_loss: float | None) -> dict[str, str]:
    """What the progress line shows after each step (eval loss once there is one)."""
    fields = {"loss": f"{loss:.4f}", "lr": f"{lr:.2e}", "tok/s": f"{tokens_per_second:,.0f}"}
    if eval_loss is not None:
        fields["eval"] = f"{eval_loss:.4f}"
    return fields


class LogProgress:
    """Progress for logs (no terminal): one line per tenth of the run with step, loss, lr, tokens/s, eval loss, ETA."""

    def __init__(self, total: int, initial: int, enabled: bool):
        self.total, self.n, self.enabled = total, initial, enabled
        self.every = max(1, total // 10)
        self.start, self.start_n, self.postfix = time.perf_counter(), initial, {}

    def line(self) -> str:
        rate = (self.n - self.start_n) / max(time.perf_counter() - self.start, 1e-9)
        eta = (self.total - self.n) / rate if rate else float("inf")
        fields = " ".join(f"{k} {v}" for k, v in self.postfix.items())
        return f"train: step {self.n}/{self.total} {fields} eta {human_duration(eta)}"

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.enabled and (self.n % self.every == 0 or self.n == self.total):
            print(self.line(), file=sys.stderr, flush=True)

    def set_postfix(self, refresh: bool = False, **fields) -> None:
        self.postfix = fields

    def close(self) -> None:
        pass


def progress_bar(total: int, initial: int, enabled: bool):
    """A progress bar (tqdm: step, elapsed<remaining as h:mm:ss, and the step fields) on a terminal; a plain line
    per tenth of the run in a log."""
    if not sys.stderr.isatty():
        return LogProgress(total, initial, enabled)
    from tqdm.auto import tqdm
    return tqdm(total=total, initial=initial, disable=not enabled, desc="train", unit="step", file=sys.stderr,
                dynamic_ncols=True, mininterval=0.5)
