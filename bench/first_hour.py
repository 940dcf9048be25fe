"""A new user's first hour, timed on this machine: setup, `make demo`, and the README's two tiny runs.

Usage: python bench/first_hour.py [--setup] [--out bench/results/first_hour_cpu.json]
       python bench/first_hour.py --no-demo --steps 2 --only tiny_lora --out /tmp/check.json   (the tests' quick check)

Works in a fresh copy of the committed tree (`git archive HEAD`, as a clone would have it) in a temporary folder:
  --setup   times `scripts/setup full` into a fresh virtual environment (minutes: the ML stack; on a machine without
            a GPU it installs the CPU build of torch). Without --setup the last measured setup figure in --out is kept
            (with the date and machine it was measured on) and the tiny runs use this Python's environment.
  make demo is timed twice in a fresh light environment: the first time (setup light + the answer) and again (the
            answer alone).
  the tiny runs are the README's `advisor run recipes/tiny-cpu-lora.yaml` and `... tiny-cpu-qlora.yaml`, whole.
Every figure is the wall clock of one command; the machine (CPU, cores, memory, load average) is written beside it,
because on a shared machine the same command can take twice as long.
"""

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "bench" / "results" / "first_hour_cpu.json"
TINY_RUNS = {"tiny_lora": "recipes/tiny-cpu-lora.yaml", "tiny_qlora": "recipes/tiny-cpu-qlora.yaml"}


def machine() -> dict:
    """What the figures were measured on."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gib = None
    try:
        memory_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": memory_gib, "os": platform.platform(),
            "python": platform.python_version(), "load_average_1m_at_start": round(os.getloadavg()[0], 2)}


def timed(command: list[str], cwd: Path, env: dict | None = None) -> float:
    """Wall seconds of one command; its output goes to stderr so a failure is visible."""
    start = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, env={**os.environ, **(env or {})}, stdout=sys.stderr, stderr=sys.stderr)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"first_hour: `{' '.join(command)}` exited with {result.returncode}")
    return round(seconds, 1)


def fresh_checkout(into: Path) -> Path:
    """The committed tree, as `git clone` would give it (no .venv, no runs, no build outputs)."""
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", "HEAD"], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setup", action="store_true", help="Also time `scripts/setup full` into a fresh venv (minutes).")
    parser.add_argument("--no-demo", action="store_true", help="Skip `make demo` (it installs a light venv).")
    parser.add_argument("--steps", type=int, default=None, help="Cut the tiny runs to N steps (a quick check, not the figure).")
    parser.add_argument("--only", choices=sorted(TINY_RUNS), default=None, help="Time only this tiny run.")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    previous = json.loads(args.out.read_text()) if args.out.is_file() else {}
    result: dict = {"measured": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%MZ"),
                    "machine": machine(), "command": "python bench/first_hour.py" + (" --setup" if args.setup else "")}
    with tempfile.TemporaryDirectory(prefix="first-hour-") as tmp:
        tmp = Path(tmp)
        repo = fresh_checkout(tmp / "rightsize")
        if args.setup:
            full = tmp / "venv-full"
            result["setup_full_seconds"] = timed(["scripts/setup", "full"], repo, {"VENV": str(full)})
            result["setup_full"] = {"command": "scripts/setup full", "measured": result["measured"],
                                    "machine": result["machine"]}
            advisor = [str(full / "bin" / "advisor")]
            result["tiny_runs_python"] = "the fresh venv of scripts/setup full"
        else:
            if "setup_full_seconds" in previous:
                result["setup_full_seconds"] = previous["setup_full_seconds"]
                result["setup_full"] = previous.get("setup_full")
            advisor = [sys.executable, "-m", "advisor.cli"]
            result["tiny_runs_python"] = sys.executable
        if not args.no_demo:
            light = tmp / "venv-light"
            result["make_demo_first_seconds"] = timed(["make", "demo"], repo, {"VENV": str(light)})
            result["make_demo_again_seconds"] = timed(["make", "demo"], repo, {"VENV": str(light)})
        env = {"PYTHONPATH": str(repo), "HF_HUB_OFFLINE": "1", "RIGHTSIZE_CACHE_DIR": str(tmp / "cache")}
        steps = ["--set", f"train.max_steps={args.steps}"] if args.steps else []
        for key, recipe in TINY_RUNS.items():
            if args.only and key != args.only:
                continue
            out = tmp / "runs" / key
            seconds = timed(advisor + ["run", recipe, "--out", str(out), *steps], repo, env)
            report = json.loads((out / "report.json").read_text())
            result[key] = {"command": " ".join(["advisor", "run", recipe, "--out", f"runs/{key}", *steps]), "seconds": seconds,
                           "training_seconds": round(report["wall_seconds"], 1), "steps": report["steps"],
                           "status": report["status"]}
    result["machine"]["load_average_1m_at_end"] = round(os.getloadavg()[0], 2)
    text = json.dumps(result, indent=2) + "\n"
    print(text, end="")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
