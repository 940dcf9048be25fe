"""The reliability campaign behind docs/reliability.md: bad inputs, kills, signals and injected faults, counted.

Usage: python bench/reliability.py [--inputs 3000] [--kills 10] [--seed 0] [--campaigns-only]
Writes bench/results/reliability_cpu.json and regenerates docs/reliability.md from it (CPU, a few minutes).
The data-safety cases (run folders, concurrent writers, resume with changes, corrupted state, data files, adversarial
recipes) are in bench/reliability_safety.py; the features campaign (ownership by record, every data source, settings
that cannot act, external services, resume consistency, one-line errors, bounded memory) in
bench/reliability_features.py. --campaigns-only reruns those two and keeps the inputs, kills and faults of the last
full run (each part's command is recorded beside it).
"""

import argparse
import errno
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.common import TINY, cli, error_line  # noqa: E402
from bench.reliability_features import CATEGORIES as FEATURE_CATEGORIES, features_campaign  # noqa: E402
from bench.reliability_safety import finished_run, safety_campaign  # noqa: E402

RUN_ARGS = ["--set", "train.max_steps=120", "--set", "train.checkpoint_every=5", "--set", "train.eval_every=0"]

NUMERIC = {("estimate", "--model", "Llama-3.1-8B"): ["--rank", "--seq-len", "--micro-batch", "--gpus", "--tokens", "--efficiency", "--price"],
           ("scaling", "optimal"): ["--compute", "--tokens"],
           ("scaling", "loss", "--params", "7B", "--tokens", "1T"): ["--params", "--tokens"],
           ("scaling", "repeat", "--params", "1B", "--tokens", "8B", "--unique-tokens", "2B"): ["--params", "--tokens", "--unique-tokens"],
           ("scaling", "inference", "--loss", "2", "--inference-tokens", "1T"): ["--loss", "--inference-tokens"],
           ("recommend", "--tokens", "2e9"): ["--tokens", "--docs", "--quality", "--requests-per-day", "--gpus", "--budget",
                                              "--price", "--epochs", "--seq-len", "--availability", "--tokens-per-request"],
           ("run", str(TINY)): ["--nproc-per-node", "--nnodes", "--node-rank"]}
NAMES = {("estimate", "--model", "Llama-3.1-8B"): ["--gpu", "--method", "--optimizer", "--targets"],
         ("estimate", "--gpu", "H100"): ["--model"],
         ("recommend", "--tokens", "2e9"): ["--gpu", "--api", "--base-model", "--task"],
         ("scaling", "optimal", "--compute", "1e21"): ["--fit"], ("run", str(TINY)): ["--gpu"]}
FIXED_BAD_NUMBERS = ["", " ", "-1", "-0.5", "nan", "NaN", "inf", "-inf", "1e999", "-1e999", "abc", "1..2", "0x1F", "--", "1e",
                     "k", "5MM", "１２", "∞", "1e-999999"]


def bad_number(rng: random.Random) -> str:
    kind = rng.randrange(4)
    if kind == 0:
        return rng.choice(FIXED_BAD_NUMBERS)
    if kind == 1:
        return repr(-rng.uniform(1e-9, 1e12))
    if kind == 2:
        return "".join(rng.choice("abcxyz!@#$%^&*()[]{}<>?/\\|;:'\"`~ .eE+-") for _ in range(rng.randint(1, 8)))
    return str(rng.randint(1, 999)) + rng.choice(["x", "kk", "e+", "..", " 5", "%", "$", "_e", "B7"])


def bad_name(rng: random.Random) -> str:
    return rng.choice(["", " ", "../../etc/passwd", "\t", "lora;rm -rf /", "q_proj,,"]) if rng.random() < 0.3 else \
        "".join(rng.choice("QWXZqwxz_-./0123456789") for _ in range(rng.randint(1, 10)))


def bad_files(tmp: Path) -> list[list[str]]:
    cases = {"empty.yaml": b"", "list.yaml": b"[1, 2]\n", "scalar.yaml": b"42\n", "binary.yaml": b"\x00\x01\xff\xfe",
             "tag.yaml": b"!!python/object/apply:os.system ['echo owned']\n", "dupe.yaml": b"name: a\nname: b\n",
             "typo.yaml": b"name: t\nmodle: {}\n", "types.yaml": b"name: t\nmodel: {name: 3}\ndata: {path: [1]}\n",
             "badyaml.yaml": b"a: b: c\n"}
    for name, content in cases.items():
        (tmp / name).write_bytes(content)
    (tmp / "afile").write_text("x")
    paths = [tmp / n for n in cases] + [tmp / "missing.yaml", tmp, tmp / "afile" / "below.yaml"]
    return [[cmd, str(p)] for cmd in ("validate", "estimate", "run") for p in paths] + \
           [["compare", str(tmp)], ["calibrate", str(tmp)], ["compare", str(tmp / "missing")]]


def input_campaign(n: int, rng: random.Random) -> dict:
    tried = one_line = tracebacks = accepted = 0
    examples = []
    with tempfile.TemporaryDirectory() as tmp:
        cases = bad_files(Path(tmp))
        for _ in range(n):
            table = NUMERIC if rng.random() < 0.6 else NAMES
            prefix = rng.choice(sorted(table))
            flag = rng.choice(table[prefix])
            cases.append([*prefix, flag, bad_number(rng) if table is NUMERIC else bad_name(rng)])
        for args in cases:
            code, out, err = cli(args + (["--out", str(Path(tmp) / "o")] if args[0] == "run" and len(args) == 2 else []))
            tried += 1
            tracebacks += "Traceback" in out + err
            ok = code in (1, 2) and len(err.strip().splitlines()) == 1 and err.startswith("advisor: error: ")
            one_line += ok
            if code == 0:
                accepted += 1
                examples.append(args)
    return {"inputs_tried": tried, "one_line_errors": one_line, "tracebacks": tracebacks, "accepted": accepted,
            "accepted_examples": examples[:10]}


def start(out: Path, *extra) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "advisor.cli", "run", str(TINY), "--out", str(out), *RUN_ARGS, *extra],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def last_step(out: Path) -> int:
    path = out / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return json.loads(lines[-1])["step"] if lines and lines[-1].endswith("}") else 0


def adapter_equal(a: Path, b: Path) -> bool:
    from safetensors.torch import load_file
    x, y = load_file(a / "adapter" / "adapter_model.safetensors"), load_file(b / "adapter" / "adapter_model.safetensors")
    same_curve = [json.loads(l).get("loss") for l in (a / "metrics.jsonl").read_text().splitlines()] == \
                 [json.loads(l).get("loss") for l in (b / "metrics.jsonl").read_text().splitlines()]
    return x.keys() == y.keys() and all(bool((x[k] == y[k]).all()) for k in x) and same_curve


def kill_campaign(kills: int, rng: random.Random, tmp: Path) -> dict:
    straight = tmp / "straight"
    assert start(straight).wait() == 0
    out, lost, proc, done = tmp / "killed", [], start(tmp / "killed"), 0
    while done < kills:
        target = last_step(out) + rng.randint(1, 12)
        while last_step(out) < target and proc.poll() is None:
            time.sleep(0.005)
        time.sleep(rng.uniform(0, 0.05))
        if proc.poll() is not None:
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        done += 1
        saved = [json.loads((p / "state.json").read_text())["step"] for p in (out / "checkpoints").glob("step-*")
                 if (p / "state.json").is_file()] if (out / "checkpoints").exists() else []
        lost.append(last_step(out) - max(saved, default=0))
        proc = start(out, "--resume")
    assert proc.wait() == 0
    signals = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        run = tmp / sig.name
        p = start(run)
        while last_step(run) < rng.randint(10, 60) and p.poll() is None:
            time.sleep(0.005)
        p.send_signal(sig)
        code = p.wait()
        report = json.loads((run / "report.json").read_text())
        resumed = start(run, "--resume").wait()
        signals[sig.name] = {"exit_code": code, "stopped_at_step": report["steps"], "resume_exit": resumed,
                             "adapter_identical": adapter_equal(straight, run)}
    return {"kills": done, "steps_lost_per_kill": lost, "max_steps_lost": max(lost, default=0), "checkpoint_every": 5,
            "adapter_identical_after_kills": adapter_equal(straight, out), "signals": signals}


def nan_loss_from(attach_adapters, forward_call: int):
    """`attach_adapters` whose model returns a NaN loss from its `forward_call`-th forward on (a diverging run)."""
    def poisoned(*args):
        model = attach_adapters(*args)
        forward, calls = model.forward, {"n": 0}

        def nan_forward(*a, **k):
            calls["n"] += 1
            out = forward(*a, **k)
            if calls["n"] >= forward_call:
                out.loss = out.loss * float("nan")
            return out
        model.forward = nan_forward
        return model
    return poisoned


def disk_full_on_call(fn, call: int):
    """`fn` that raises ENOSPC on its `call`-th call (a disk that fills up mid-run)."""
    calls = {"n": 0}

    def full(*args):
        calls["n"] += 1
        if calls["n"] == call:
            raise OSError(errno.ENOSPC, "No space left on device")
        return fn(*args)
    return full


def fault_campaign(tmp: Path) -> dict:
    """Faults injected inside the process: a NaN loss and a full disk while checkpointing and while writing."""
    import runners.session as session_module
    import runners.checkpoint as checkpoint_module
    from runners import io as rio
    results = {}
    original = session_module.attach_adapters
    session_module.attach_adapters = nan_loss_from(original, 13)
    code, _, err = cli(["run", TINY, "--out", tmp / "nan", *RUN_ARGS])
    session_module.attach_adapters = original
    ckpts = sorted(p.name for p in (tmp / "nan" / "checkpoints").glob("step-*"))
    results["nan_loss"] = {"exit_code": code, "message": error_line(err), "last_checkpoint": ckpts[-1] if ckpts else None}

    replace = checkpoint_module.atomic_replace_dir
    checkpoint_module.atomic_replace_dir = disk_full_on_call(replace, 3)
    code, _, err = cli(["run", TINY, "--out", tmp / "disk", *RUN_ARGS])
    checkpoint_module.atomic_replace_dir = replace
    left = sorted(p.name for p in (tmp / "disk" / "checkpoints").iterdir())
    code_resume, _, _ = cli(["run", TINY, "--out", tmp / "disk", *RUN_ARGS, "--resume"])
    results["disk_full_at_checkpoint"] = {"exit_code": code, "message": error_line(err), "checkpoints_left": left,
                                          "resume_exit": code_resume}

    target = tmp / "report.json"
    rio.atomic_write_json(target, {"version": 1})
    real = os.fsync
    rio.os.fsync = lambda fd: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left on device"))
    try:
        rio.atomic_write_json(target, {"version": 2})
    except OSError:
        pass
    rio.os.fsync = real
    results["disk_full_at_report_write"] = {"previous_file_intact": json.loads(target.read_text()) == {"version": 1},
                                            "temporary_files_left": len(list(tmp.glob(".report.json.*")))}
    return results


def write_doc(result: dict, path: Path) -> None:
    i, k, f = result["inputs"], result["kills"], result["faults"]
    sig = k["signals"]
    lines = [
        "# Reliability: what was tried and what held", "",
        f"Generated by `{result['command']}` (results: `bench/results/reliability_cpu.json`). The CI subset of the same "
        "checks is `tests/runners/test_reliability.py` (plus the property tests in `tests/advisor/test_cli.py` and `tests/advisor/test_recipes.py`).", "",
        "## Bad input", "",
        f"- **{i['inputs_tried']} bad inputs** tried on every command and flag: malformed numbers, negatives, NaN, "
        "infinities, overflow, non-ASCII digits, empty strings, unknown GPU/model/API/fit/task/target names, missing, "
        "empty, binary and non-mapping files, directories where files belong, YAML with object-constructing tags, "
        "duplicate and misspelled keys, wrong types.",
        f"- {i['one_line_errors']} answered with one line naming what is wrong and the accepted form (exit code 2; 1 for "
        f"a failing machine rather than bad input); **{i['tracebacks']} tracebacks**, {i['accepted']} accepted.", "",
        "## Interrupted and killed runs", "",
        f"- **{k['kills']} SIGKILLs** at random points of a 120-step run (checkpoint every {k['checkpoint_every']} steps), "
        f"each followed by `--resume`: steps lost per kill {k['steps_lost_per_kill']} (at most one interval), and the final "
        f"adapter and loss curve {'**identical**' if k['adapter_identical_after_kills'] else 'DIFFERENT'} to an uninterrupted run's.",
    ]
    for name, s in sig.items():
        lines.append(f"- **{name}** at step {s['stopped_at_step']}: checkpoint of that very step, exit code {s['exit_code']}, "
                     f"resume exit {s['resume_exit']}, adapter {'identical' if s['adapter_identical'] else 'DIFFERENT'}.")
    lines += ["", "## Faults inside a run", "",
              f"- **NaN loss** injected at step 13: exit {f['nan_loss']['exit_code']}, \"{f['nan_loss']['message']}\"; the last "
              f"checkpoint kept is {f['nan_loss']['last_checkpoint']} (finite weights).",
              f"- **Full disk while checkpointing** (ENOSPC at the third checkpoint): exit {f['disk_full_at_checkpoint']['exit_code']}, "
              f"\"{f['disk_full_at_checkpoint']['message']}\"; checkpoints left: {f['disk_full_at_checkpoint']['checkpoints_left']}; "
              f"`--resume` then exits {f['disk_full_at_checkpoint']['resume_exit']}.",
              f"- **Full disk while writing a report** (ENOSPC at fsync): previous file intact: "
              f"{f['disk_full_at_report_write']['previous_file_intact']}; temporary files left: "
              f"{f['disk_full_at_report_write']['temporary_files_left']}.",
              "- CUDA out-of-memory is caught and reported with the estimate and the changes that would fit (GPU-only: not "
              "exercised here).", "",
              "## Untrusted files", "",
              "- YAML is read with a safe loader that also refuses duplicate keys; `!!python/...` tags are rejected (tested).",
              "- Models load with `use_safetensors=True`; checkpoints and cached data with `torch.load(weights_only=True)`; "
              "a test scans the code for any unsafe torch, YAML or pickle loading.",
              "- `trust_remote_code` is off unless a recipe sets it, and the run prints a note when it is on (tested).",
              "- Tests set `HF_HUB_OFFLINE=1` (and the datasets/transformers equivalents), so an accidental download fails.", "",
              ""]
    lines += safety_section(result["safety"])
    safe = sum(row["data_lost"] for row in result["safety"]["categories"].values()) == 0
    lines += [f"**Data lost: {'none' if safe and k['adapter_identical_after_kills'] and all(s['adapter_identical'] for s in sig.values()) else 'SEE ABOVE'}.**", ""]
    path.write_text("\n".join(lines))


def safety_section(safety: dict) -> list[str]:
    """The per-category table of the data-safety campaign, and every case that was not handled."""
    rows = safety["categories"]
    total = {key: sum(r[key] for r in rows.values()) for key in ("tried", "handled", "data_lost")}
    lines = ["## Run folders, resumes, data files and the newer features", "",
             f"Generated by `{safety.get('command', 'python bench/reliability.py')}`.", "",
             "What careful and clumsy users do (bench/reliability_safety.py): `--out` and `--overwrite` on folders that "
             "are not runs (documents, the data, the current directory and its parents, symlinks, runs holding other "
             "files), unsafe run names, failed starts over a finished run, a second writer on a locked folder, `--resume` "
             "with other settings or data, damaged checkpoints, metrics and reports, malformed data in every format, and "
             "adversarial recipes and calibration files; and the newer features misused (bench/reliability_features.py: "
             "a user's files where a run writes its outputs, every data source (mix, eval, hub), settings that cannot "
             "act, trackers that cannot start, resumes with changes a checkpoint cannot survive, internal errors, rows "
             "of 10 MB). Handled: refused in one line naming the file or flag (exit "
             "code 2), or carried out correctly; data lost: a file of the user's, or a finished run, changed or gone.", "",
             "| category | tried | handled | data lost |", "|---|---:|---:|---:|"]
    lines += [f"| {name} | {r['tried']} | {r['handled']} | {r['data_lost']} |" for name, r in rows.items()]
    lines += [f"| **all** | **{total['tried']}** | **{total['handled']}** | **{total['data_lost']}** |", ""]
    for case in safety["not_handled"]:
        lines.append(f"- not handled: {case['category']}: {case['name']}: {case['detail']}")
    return lines + ([""] if safety["not_handled"] else [])


def campaigns(tmp: Path) -> dict:
    """The data-safety campaign and the features campaign, one table (categories of both)."""
    result = safety_campaign(tmp / "safety")
    runs: dict[str, Path] = {}
    extra = features_campaign(tmp / "features", lambda: runs.get("run") or runs.setdefault(
        "run", finished_run(tmp / "features-run")))
    for case in extra:
        row = result["categories"].setdefault(case.category, {"tried": 0, "handled": 0, "data_lost": 0})
        row["tried"] += 1
        row["handled"] += case.handled
        row["data_lost"] += case.data_lost
    result["cases"] += [asdict(c) for c in extra]
    result["not_handled"] += [asdict(c) for c in extra if not c.handled or c.data_lost]
    result["feature_categories"] = list(FEATURE_CATEGORIES)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=3000)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--campaigns-only", action="store_true",
                        help="rerun the safety and features campaigns only; keep the rest of the last results")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    out = ROOT / "bench" / "results" / "reliability_cpu.json"
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("RIGHTSIZE_CACHE_DIR", str(Path(tmp) / "cache"))
        os.environ["RIGHTSIZE_CONFIG_DIR"] = str(Path(tmp) / "config")
        if args.campaigns_only:
            result = json.loads(out.read_text())
        else:
            result = {"command": f"python bench/reliability.py --inputs {args.inputs} --kills {args.kills} --seed {args.seed}",
                      "inputs": input_campaign(args.inputs, rng), "kills": kill_campaign(args.kills, rng, Path(tmp)),
                      "faults": fault_campaign(Path(tmp))}
        result["campaigns_command"] = "python bench/reliability.py --campaigns-only" if args.campaigns_only \
            else result["command"]
        result["safety"] = campaigns(Path(tmp) / "campaigns") | {"command": result["campaigns_command"]}
    out.write_text(json.dumps(result, indent=2) + "\n")
    write_doc(result, ROOT / "docs" / "reliability.md")
    print(json.dumps({k: v for k, v in result.items() if k not in ("faults", "safety")}
                     | {"safety": result["safety"]["categories"], "not_handled": result["safety"]["not_handled"]}, indent=2))


if __name__ == "__main__":
    main()
