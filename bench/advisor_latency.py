"""How long `advisor recommend` takes end to end, beside a bare Python start, measured in one run.

Usage: python bench/advisor_latency.py [--runs 15] [--module] [--breakdown] [--against DIR [--against-path P]]
                                      [--out bench/results/advisor_latency.json]
(--module runs `python -m advisor.cli` from the current directory instead of the installed `advisor` script, to time
a checkout other than the installed one; --against DIR times another checkout's `python -m advisor.cli recommend`
paired with this one's, interleaved, with P (e.g. the older typer it needs) ahead on its PYTHONPATH)
Reports medians of wall-clock times of fresh processes (what a user waits for), and which heavy modules
the command imported (must be none; pydantic counts: the advisor's records are msgspec Structs, which keep it off
this path). --breakdown also times fresh processes that stop at each stage of the command's start-up (STAGES: the
interpreter, typer, our modules, the whole command), interleaved, so the differences of their medians say where the
time goes, and beside them what importing pydantic would cost (PYDANTIC_ALONE).
"""

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path


def median_seconds(cmd: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# Each stage does what the one before it did and more; after them comes the command itself. Each runs as the command
# does (advisor.cli.main): without the cyclic collector, frozen before exit. pydantic is no stage: `recommend` does not
# import it (its records are msgspec Structs); PYDANTIC_ALONE times what it would add, beside the stages.
STAGES = {
    "python": "pass",
    "typer": "import typer",
    "our_modules": "import typer\nimport advisor.cli.recommend, advisor.render.decision_text, advisor.render.recommendation, "
                   "advisor.render.notices, advisor.plan.sizing",
}
# Not a stage: typer and pydantic's import with one model defined, to show what keeping pydantic off the path saves.
PYDANTIC_ALONE = "import typer\nfrom pydantic import BaseModel\nclass M(BaseModel):\n    x: int = 0"


def breakdown(runs: int, example: list[str]) -> dict:
    """Median wall seconds of a fresh process per stage, of the command and of PYDANTIC_ALONE (interleaved: each round
    runs every one once), and each stage's increment over the one before."""
    def script(code: str) -> list[str]:
        return [sys.executable, "-c", f"import gc\ngc.disable()\n{code}\ngc.freeze()"]
    commands = {name: script(code) for name, code in STAGES.items()} | {"command": example}
    aside = {"typer_and_pydantic": script(PYDANTIC_ALONE)}
    times = {name: [] for name in commands | aside}
    for _ in range(runs):
        for name, command in (commands | aside).items():
            start = time.perf_counter()
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
            times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(t) for name, t in times.items()}
    names = list(commands)
    return {"median_seconds": {n: round(medians[n], 4) for n in names},
            "increment_seconds": {n: round(medians[n] - (medians[names[i - 1]] if i else 0.0), 4)
                                  for i, n in enumerate(names)},
            "aside_median_seconds": {n: round(medians[n], 4) for n in aside}}


def paired(runs: int, ours: list[str], theirs: list[str], theirs_dir: Path, theirs_path: str | None) -> dict:
    """Ours against another checkout, interleaved (ours, theirs, ours, theirs ...): each side's median and the median
    and range of the per-round ratios ours / theirs."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (theirs_path, str(theirs_dir)) if p))
    times = {"ours": [], "theirs": []}
    for _ in range(runs):
        for side, command in (("ours", ours), ("theirs", theirs)):
            start = time.perf_counter()
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL,
                           **({"cwd": theirs_dir, "env": env} if side == "theirs" else {}))
            times[side].append(time.perf_counter() - start)
    ratios = sorted(a / b for a, b in zip(times["ours"], times["theirs"]))
    return {"against": str(theirs_dir), "against_pythonpath": theirs_path,
            "ours_median_seconds": round(statistics.median(times["ours"]), 4),
            "theirs_median_seconds": round(statistics.median(times["theirs"]), 4),
            "ratio_median": round(statistics.median(ratios), 3), "ratio_min": round(ratios[0], 3),
            "ratio_max": round(ratios[-1], 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--module", action="store_true", help="time `python -m advisor.cli` from this directory")
    parser.add_argument("--breakdown", action="store_true", help="also time each stage of the start-up (STAGES)")
    parser.add_argument("--against", type=Path, default=None, help="another checkout to time paired with this one")
    parser.add_argument("--against-path", default=None, help="PYTHONPATH entries ahead of --against's checkout")
    args = parser.parse_args()
    advisor = [sys.executable, "-m", "advisor.cli"] if args.module else [
        shutil.which("advisor") or str(Path(sys.executable).parent / "advisor")]
    example = [*advisor, "recommend", "--docs", "500k", "--tokens", "2e9"]
    median_seconds(example, 2)  # warm the file cache
    python_start = median_seconds([sys.executable, "-c", "pass"], args.runs)
    recommend = median_seconds(example, args.runs)
    recommend_json = median_seconds(example + ["--json"], args.runs)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    probe = subprocess.run([sys.executable, "-c", "import sys; from advisor.cli import main\n"
                            "try: main(['recommend','--tokens','2e9'])\nexcept SystemExit: pass\n"
                            "import json; print(json.dumps([m for m in ('torch','transformers','peft','numpy','pydantic') if m in sys.modules]))"],
                           capture_output=True, text=True, check=True)
    result = {
        "command": " ".join(["advisor"] + example[len(advisor):]) + (" (python -m advisor.cli)" if args.module else ""),
        "runs": args.runs,
        "python_start_seconds": round(python_start, 4),
        "recommend_seconds": round(recommend, 4),
        "recommend_json_seconds": round(recommend_json, 4),
        "recommend_over_python_start": round(recommend / python_start, 2),
        "heavy_modules_imported": json.loads(probe.stdout.strip().splitlines()[-1]),
        "load_average_1min": round(load, 2) if load is not None else None,
        "cpus": os.cpu_count(),
        "machine": f"{platform.machine()} {platform.processor() or ''} python {platform.python_version()}".strip(),
    }
    if args.breakdown:
        result["breakdown"] = breakdown(args.runs, example)
    if args.against:
        theirs = [sys.executable, "-m", "advisor.cli", *example[len(advisor):]]
        result["paired"] = paired(args.runs, example, theirs, args.against.resolve(), args.against_path)
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
