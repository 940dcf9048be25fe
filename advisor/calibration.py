"""Calibration: efficiency and memory overhead fitted per GPU type and method from measured runs."""

import json
import statistics
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from advisor.catalog import user_config_dir
from advisor.errors import AdvisorError

CALIBRATION_FILE = "calibration.json"


class CalibrationEntry(BaseModel):
    """One (GPU type, method) cell: medians over its runs, with their spread (min-max)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, defer_build=True)
    gpu: str
    method: str
    runs: int = Field(ge=1)
    efficiency: float = Field(gt=0, le=1, description="Executed FLOPs / (wall x GPUs x peak): achieved fraction of peak.")
    efficiency_min: float
    efficiency_max: float
    memory_overhead_fraction: float = Field(description="Measured peak / estimated peak without overhead, minus 1 "
                                                        "(at least 0: the fit never predicts below the memory model).")
    memory_overhead_min: float
    memory_overhead_max: float


class Calibration(BaseModel):
    # both schemas are built when a calibration file is read, not by every command that imports this module
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)
    entries: list[CalibrationEntry] = []
    leave_one_out: dict[str, float] = Field(default_factory=dict, description="Median |predicted/measured - 1| when each "
                                                                               "run is predicted from the others.")
    step_time: dict[str, float] | None = Field(None, description="advisor.step_time.StepTimeConstants fitted to "
                                                                 "published rows (used where no run cell applies).")
    memory_overhead_fraction: float | None = Field(None, description="The allocator's reserve as a fraction of "
                                                   "activations and logits, fitted to published reserved-memory rows.")
    published: dict[str, float | str] = Field(default_factory=dict, description="The published rows fitted: file, "
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
        """The fitted step-time constants, or None (advisor.step_time.DEFAULT_STEP_TIME applies)."""
        if not self.step_time:
            return None
        from advisor.step_time import StepTimeConstants
        return StepTimeConstants(**self.step_time, source=f"calibration {self.path}")


def default_calibration_path() -> Path:
    return user_config_dir() / CALIBRATION_FILE


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
        calibration = Calibration.model_validate({**data, "path": path})
    except UnicodeDecodeError as exc:
        raise AdvisorError(f"{path}: not a calibration file (not UTF-8 at byte {exc.start})") from None
    except (json.JSONDecodeError, ValidationError, TypeError, RecursionError) as exc:
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
    """The first line that says what is wrong (pydantic puts the field and its problem on lines 2 and 3)."""
    if isinstance(exc, ValidationError) and exc.errors():
        err = exc.errors()[0]
        return f"{'.'.join(map(str, err['loc']))}: {err['msg']}"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def median_spread(values: list[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)
