"""The recipe's data preparation measured: runners.data_probe run as a separate process (the advisor imports no
torch), its JSON read into a DataProbe, or the reason there is none."""

import json
import os
import subprocess
import sys
from pathlib import Path

import msgspec

from advisor.plan.estimate import DataProbe

# The probe loads the tokenizer stack (a few seconds), then samples ~2,000 rows (about a second with a fast
# tokenizer); past this the estimate goes on without it.
PROBE_TIMEOUT_S = 120
# The environment variable that turns the probe off (`0`), as --no-data-probe does: the test suite sets it.
PROBE_ENV = "RIGHTSIZE_DATA_PROBE"
NO_RUNNER = "not measured: install the training extra (pip install 'rightsize[runner]') to measure it"


def probe_disabled() -> bool:
    """RIGHTSIZE_DATA_PROBE=0 (or false, no, off) skips the probe."""
    return os.environ.get(PROBE_ENV, "").strip().lower() in ("0", "false", "no", "off")


def probe_data(recipe: Path, overrides: list[str] | tuple[str, ...] = (),
               timeout_s: float = PROBE_TIMEOUT_S) -> DataProbe | str:
    """runners.data_probe's measurement of the recipe's data, or "not measured: why". Offline: a tokenizer or hub
    dataset that is not cached locally is a reason, never a download."""
    import importlib.util
    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("transformers") is None:
        return NO_RUNNER  # find_spec locates the package without importing it
    command = [sys.executable, "-m", "runners.data_probe", str(recipe)]
    for assignment in overrides:
        command += ["--set", assignment]
    env = os.environ | {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, env=env)
    except subprocess.TimeoutExpired:
        return f"not measured: the probe took over {timeout_s:g} s"
    except OSError as exc:
        return f"not measured: the probe did not start ({exc})"
    return read_probe(proc.stdout, proc.stderr)


def read_probe(stdout: str, stderr: str = "") -> DataProbe | str:
    """The probe's last stdout line as a DataProbe, or the reason it measured nothing."""
    lines = stdout.strip().splitlines()
    try:
        answer = json.loads(lines[-1]) if lines else None
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        detail = (stderr.strip().splitlines() or ["no answer"])[-1][:200]
        return f"not measured: the probe failed ({detail})"
    if "error" in answer:
        return f"not measured: {answer['error']}"
    try:
        return msgspec.convert(answer, DataProbe, strict=False)
    except msgspec.ValidationError as exc:
        return f"not measured: the probe's answer is unreadable ({exc})"
