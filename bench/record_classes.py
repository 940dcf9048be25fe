"""What a frozen record class costs `advisor recommend`: defining it at import, building one, replacing a field;
frozen dataclasses against msgspec Structs, each in fresh processes, interleaved.

Usage: python bench/record_classes.py [--runs 21] [--classes 31] [--fields 12] [--prelude "import typer"]
                                      [--out bench/results/record_classes_cpu.json]
Each process first runs `--prelude` (untimed: what the command has imported before its records; typer by default),
then defines `--classes` classes of `--fields` float fields (the last three defaulted), as
@dataclasses.dataclass(frozen=True) or as msgspec.Struct(frozen=True), then builds 20,000 instances of one and replaces
a field of each. Reports the medians of: importing the library, defining the classes, one construction, one replace.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

INSTANCES = 20_000

KINDS = {
    "dataclass": ("import dataclasses", "@dataclasses.dataclass(frozen=True)\nclass C{i}:", "dataclasses.replace"),
    "msgspec_struct": ("import msgspec, msgspec.structs", "class C{i}(msgspec.Struct, frozen=True):",
                       "msgspec.structs.replace"),
}


def script(kind: str, classes: int, fields: int, prelude: str) -> str:
    """The code one process runs: times (ms) of the import, the class definitions, and (us) one build, one replace."""
    imports, header, replace = KINDS[kind]
    body = "\n".join(f"    f{j}: float" + (" = 0.0" if j >= fields - 3 else "") for j in range(fields))
    defs = "\n".join(header.format(i=i) + "\n" + body for i in range(classes))
    args = ", ".join(str(float(j)) for j in range(fields - 3))
    return "\n".join([
        prelude, "import time", "t0 = time.perf_counter()", imports, "t1 = time.perf_counter()", defs,
        "t2 = time.perf_counter()", f"objs = [C0({args}) for _ in range({INSTANCES})]", "t3 = time.perf_counter()",
        f"new = [{replace}(o, f1=2.0) for o in objs]", "t4 = time.perf_counter()",
        f"print((t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e6 / {INSTANCES}, (t4 - t3) * 1e6 / {INSTANCES})",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21)
    parser.add_argument("--classes", type=int, default=31)
    parser.add_argument("--fields", type=int, default=12)
    parser.add_argument("--prelude", default="import typer", help="code run before the timed imports")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    names = ("import_ms", "define_classes_ms", "construct_us", "replace_us")
    times = {kind: {n: [] for n in names} for kind in KINDS}
    for _ in range(args.runs):
        for kind in KINDS:
            out = subprocess.run([sys.executable, "-c", script(kind, args.classes, args.fields, args.prelude)], capture_output=True,
                                 text=True, check=True).stdout.split()
            for name, value in zip(names, out):
                times[kind][name].append(float(value))
    result = {
        "classes": args.classes, "fields": args.fields, "runs": args.runs, "prelude": args.prelude,
        "median": {kind: {n: round(statistics.median(v), 3) for n, v in t.items()} for kind, t in times.items()},
        "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "cpus": os.cpu_count(), "machine": f"{platform.machine()} python {platform.python_version()}",
    }
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
