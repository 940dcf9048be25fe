"""Calibration: efficiency and memory overhead fitted per GPU type and method from measured runs."""

import json
from pathlib import Path

from advisor.catalog.load import default_calibration_path
from advisor.core.errors import AdvisorError
from advisor.core.records import RecordError, bounded, parse, record


@record
class CalibrationEntry:
    """One (GPU type, method) cell: medians over its runs, with their spread (min-max); every number finite."""

    gpu: str
    method: str
    runs: int = bounded(ge=1)
    efficiency: float = bounded(gt=0, le=1, finite=True, description="Executed FLOPs / (wall x GPUs x peak): achieved "
                                                                      "fraction of peak.")
    efficiency_min: float = bounded(finite=True)
    efficiency_max: float = bounded(finite=True)
    memory_overhead_fraction: float = bounded(finite=True, description="Measured peak / estimated peak without "
                                              "overhead, minus 1 (at least 0: the fit never predicts below the memory "
                                              "model).")
    memory_overhead_min: float = bounded(finite=True)
    memory_overhead_max: float = bounded(finite=True)


@record
class Calibration:
    """What `advisor calibrate` fitted (calibration.json), read back by every estimate."""

    entries: list[CalibrationEntry] = bounded(default_factory=list)
    leave_one_out: dict[str, float] = bounded(default_factory=dict, description="Median |predicted/measured - 1| when each "
                                                                               "run is predicted from the others.")
    step_time: dict[str, float] | None = bounded(None, description="advisor.formulas.step_time.StepTimeConstants fitted to "
                                                                 "published rows (used where no run cell applies).")
    memory_overhead_fraction: float | None = bounded(None, description="The allocator's reserve as a fraction of "
                                                   "activations and logits, fitted to published reserved-memory rows.")
    published: dict[str, float | str] = bounded(default_factory=dict, description="The published rows fitted: file, "
                                              "counts, in-sample and leave-one-out median errors.")
    path: Path | None = None

    def _entry(self, gpu: str, method: str) -> CalibrationEntry | None:
        for entry in self.entries:
            if entry.gpu.lower() == gpu.lower() and entry.method == method:
                return entry
        return None

    def efficiency(self, gpu: str, method: str) -> float | None:
        entry = self._entry(gpu, method)
        return entry.efficiency if entry else None

    def overheads(self, gpu: str, method: str) -> dict:
        """Keyword arguments for estimate.memory_per_gpu: the fitted overhead replaces the assumed one."""
        entry = self._entry(gpu, method)
        if entry is None:
            return {} if self.memory_overhead_fraction is None else {"overhead_fraction": self.memory_overhead_fraction}
        return {"overhead_fraction": entry.memory_overhead_fraction, "overhead_fixed_gib": 0.0}

    def step_time_constants(self):
        """The fitted step-time constants, or None (advisor.formulas.step_time.DEFAULT_STEP_TIME applies)."""
        if not self.step_time:
            return None
        from advisor.formulas.step_time import StepTimeConstants
        return StepTimeConstants(**self.step_time, source=f"calibration {self.path}")


def load_calibration(path: Path | str | None = None) -> Calibration | None:
    """The calibration at `path`, else the user's default one if it exists, else None (assumed efficiencies)."""
    explicit = path is not None
    path = Path(path) if explicit else default_calibration_path()
    if not path.is_file():
        if explicit:
            raise AdvisorError(f"{path}: no such calibration file (make one with `advisor calibrate RUN_DIR...`)")
        return None
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
        calibration = parse(Calibration, {**data, "path": path})
    except UnicodeDecodeError as exc:
        raise AdvisorError(f"{path}: not a calibration file (not UTF-8 at byte {exc.start})") from None
    except (json.JSONDecodeError, RecordError, TypeError, RecursionError) as exc:
        raise AdvisorError(f"{path}: not a calibration file ({_first_problem(exc)})") from None
    except OSError as exc:
        raise AdvisorError(f"{path}: cannot read the calibration file ({exc.strerror or exc})") from None
    for entry in calibration.entries:
        if entry.memory_overhead_fraction < 0:
            raise AdvisorError(f"{path}: memory_overhead_fraction {entry.memory_overhead_fraction} for {entry.gpu}/"
                               f"{entry.method} is negative; a calibration only adds overhead to the memory model "
                               "(accepted: >= 0; refit with `advisor calibrate`)")
    return calibration


def _first_problem(exc: Exception) -> str:
    """The first line that says what is wrong (a RecordError names the field and its problem)."""
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__

