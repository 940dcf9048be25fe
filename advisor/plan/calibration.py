"""Calibration: efficiency and memory overhead fitted per GPU type and method from measured runs."""

import json
import math
from pathlib import Path
from typing import Annotated

from msgspec import Meta, Struct

from advisor.catalog.load import default_calibration_path
from advisor.core.convert import InputError, convert
from advisor.core.errors import AdvisorError


class CalibrationEntry(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One (GPU type, method) cell: medians over its runs, with their spread (min-max); every number finite."""

    gpu: str
    method: str
    runs: Annotated[int, Meta(ge=1)]
    efficiency: Annotated[float, Meta(gt=0, le=1, description="Executed FLOPs / (wall x GPUs x peak): achieved "
                                                              "fraction of peak.")]
    efficiency_min: float
    efficiency_max: float
    memory_overhead_fraction: Annotated[float, Meta(description="Measured peak / estimated peak without overhead, "
                                                                "minus 1 (at least 0: the fit never predicts below the "
                                                                "memory model).")]
    memory_overhead_min: float
    memory_overhead_max: float

    def __post_init__(self):
        """Every number finite: msgspec's Meta bounds a number but has no finiteness check of its own (it reports this
        ValueError as a validation error of the entry)."""
        for name in ("efficiency_min", "efficiency_max", "memory_overhead_fraction", "memory_overhead_min",
                     "memory_overhead_max"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name}: Expected a finite number, got {getattr(self, name)}")


class Calibration(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What `advisor calibrate` fitted (calibration.json), read back by every estimate."""

    entries: list[CalibrationEntry] = []
    leave_one_out: Annotated[dict[str, float], Meta(description="Median |predicted/measured - 1| when each run is "
                                                                "predicted from the others.")] = {}
    step_time: Annotated[dict[str, float] | None, Meta(description=(
        "advisor.formulas.step_time.StepTimeConstants fitted to published rows (used where no run cell "
        "applies)."))] = None
    memory_overhead_fraction: Annotated[float | None, Meta(description=(
        "The allocator's reserve as a fraction of activations and logits, fitted to published reserved-memory "
        "rows."))] = None
    published: Annotated[dict[str, float | str], Meta(description="The published rows fitted: file, counts, in-sample "
                                                                  "and leave-one-out median errors.")] = {}
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
        calibration = convert(Calibration, {**data, "path": path})
    except UnicodeDecodeError as exc:
        raise AdvisorError(f"{path}: not a calibration file (not UTF-8 at byte {exc.start})") from None
    except (json.JSONDecodeError, InputError, TypeError, RecursionError) as exc:
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
    """The first line that says what is wrong (an InputError names the field and its problem)."""
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__

