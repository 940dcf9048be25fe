"""The second data-safety campaign (issue 27): the features added after the first one — merged export, data mixes and
eval files, samples, generate/chat, trackers, user catalogs, calibration, review — misused as users misuse them.
One category per rule the product keeps; every case is counted as tried, handled (refused in one line with exit code
2 naming the file, flag or field, or carried out correctly and said) and data lost (a file of the user's changed or
gone). bench/reliability.py runs it beside bench/reliability_safety.py and writes the counts to docs/reliability.md.
"""

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from bench.common import ROOT, TINY, cli, error_line
from bench.reliability_safety import DATA, SHORT, Case, copy_of, cwd, one_line, refusal, snapshot

TEXT = ROOT / "recipes" / "data" / "tiny-text.jsonl"


def _recipe(path: Path, data: Path, fmt: str = "instruction", data_extra: str = "", seq_len: int = 64) -> Path:
    """The tiny CPU recipe with its data section replaced (`data_extra`: more keys of that section, indented)."""
    lines, skipping = [], False
    for line in TINY.read_text().splitlines():
        if line.startswith("data:"):
            skipping = True
            lines.append(f"data:\n  path: {data}\n  format: {fmt}\n  seq_len: {seq_len}\n{data_extra.rstrip()}")
            continue
        if skipping and (line.startswith(" ") or not line.strip()):
            continue
        skipping = False
        lines.append(line)
    path.write_text("\n".join(lines) + "\n")
    return path


def _case(category: str, name: str, args: list, watch: Path, *needles: str, where: Path | None = None,
          absent: Path | None = None) -> Case:
    """A refusal case: handled when one line (exit 2) names every needle and `absent` was not created."""
    handled, data_lost, detail = refusal(args, watch, *needles, where=where)
    if absent is not None and absent.exists():
        handled = False
        detail += f" (left {absent.name} behind)"
    return Case(category, name, handled, data_lost, detail)


# --- 1. ownership by record: nothing of the user's deleted, moved or replaced --------------------------------

def ownership_cases(tmp: Path, finished: Path) -> list[Case]:
    cases = []
    for name in ("merged", "adapter", "checkpoints", "samples.jsonl", "tensorboard"):
        run = copy_of(finished, tmp / f"own-{name}")
        target = run / name
        if target.is_dir():
            (target / "mine.txt").write_text("the user's file")
        elif name.endswith(".jsonl"):
            target.write_text('{"mine": true}\n')
        else:
            target.mkdir()
            (target / "mine.txt").write_text("the user's file")
        before = snapshot(target)
        code, out, err = cli(["run", TINY, "--out", run, "--overwrite", *SHORT, "--set", "train.merge=true"])
        after = snapshot(target) if target.exists() else {}
        kept = all(after.get(k) == v for k, v in before.items() if "mine" in k or name.endswith(".jsonl"))
        refused = one_line(code, out, err) and name in err
        cases.append(Case("ownership by record", f"--overwrite --set train.merge=true over a run whose {name} holds "
                          "the user's file", refused or (code == 0 and kept), not kept, error_line(err)[:200]))
    run = copy_of(finished, tmp / "own-resume-merged", interrupted=True)
    shutil.rmtree(run / "merged", ignore_errors=True)
    (run / "merged").write_text("the user's file at RUN/merged")
    before = snapshot(run / "merged")
    code, out, err = cli(["run", TINY, "--out", run, "--resume", *SHORT, "--set", "train.merge=true"])
    kept = (run / "merged").is_file() and snapshot(run / "merged") == before
    cases.append(Case("ownership by record", "--resume with the user's file at RUN/merged",
                      kept and (code == 0 or one_line(code, out, err)), not kept, error_line(err)[:200]))
    report = finished / "report.json"
    cases.append(_case("ownership by record", "calibrate RUN --out RUN/report.json (an input)",
                       ["calibrate", finished, "--out", report], finished, "report.json"))
    cal = tmp / "own-cal.json"
    code, _, err = cli(["calibrate", finished, "--out", cal])
    if code == 0:
        cases.append(_case("ownership by record", "review --calibration c.json --report c.json (an input)",
                           ["review", "--model", "Llama-3.1-8B", "--method", "lora", "--gpus", "8xA100", "--days", "2",
                            "--tokens", "1e8", "--calibration", cal, "--report", cal], cal, cal.name))
    return cases


# --- 2. every data source validated the same way ---------------------------------------------------------------

def data_source_cases(tmp: Path) -> list[Case]:
    cases = []
    good = tmp / "good.jsonl"
    shutil.copy(DATA, good)
    bad = {"a mix file with a null text": ('{"instruction": "a", "output": null}\n', "mix", "line 1"),
           "a mix file with invalid UTF-8": (b'{"instruction": "caf\xe9", "output": "b"}\n', "mix", "byte"),
           "a mix file with a malformed line": ('{"instruction": "a", "output": "b"}\n{"instruction": \n', "mix", "line 2"),
           "an eval file with invalid UTF-8": (b'{"instruction": "caf\xe9", "output": "b"}\n', "eval", "byte"),
           "an empty eval file": ("", "eval", "no examples"),
           "an eval file with a null output": ('{"instruction": "a", "output": null}\n', "eval", "line 1"),
           "an eval file of another format": ('{"text": "only text"}\n', "eval", "line 1")}
    for name, (content, where, needle) in bad.items():
        c = tmp / name.replace(" ", "-")
        c.mkdir()
        side = c / "side.jsonl"
        side.write_bytes(content if isinstance(content, bytes) else content.encode())
        extra = (f"  mix:\n    - path: {side}\n      weight: 0.5\n" if where == "mix" else f"  eval_path: {side}\n")
        recipe = _recipe(c / "r.yaml", good, data_extra=extra)
        for command in ("validate", "run"):
            args = [command, recipe] + (["--out", c / "out", *SHORT] if command == "run" else [])
            cases.append(_case("every data source validated", f"{name} ({command})", args, c, side.name, needle,
                               absent=c / "out"))
    zero = tmp / "zero-weight"
    zero.mkdir()
    side = zero / "side.jsonl"
    shutil.copy(DATA, side)
    recipe = _recipe(zero / "r.yaml", good, data_extra=f"  mix:\n    - path: {side}\n      weight: 0.0001\n")
    code, out, err = cli(["validate", recipe])
    said = side.name in out + err and "weight" in out + err
    cases.append(Case("every data source validated", "a mix weight that rounds to zero rows (said, or refused)",
                      said and (code == 0 or one_line(code, out, err)), False, (out + err).strip()[-200:]))
    falsy = tmp / "falsy"
    falsy.mkdir()
    rows = falsy / "rows.jsonl"
    rows.write_text("".join(json.dumps({"instruction": "add", "input": 0, "output": str(i)}) + "\n" for i in range(40)))
    code, out, err = cli(["validate", _recipe(falsy / "r.yaml", rows)])
    cases.append(Case("every data source validated", "an instruction row's input 0 kept (not dropped as empty)",
                      code == 0 and "dropped" not in out.lower(), False, (out + err).strip()[-200:]))
    return cases


# --- 3. settings that cannot act say so ---------------------------------------------------------------------

def cannot_act_cases(tmp: Path, finished: Path) -> list[Case]:
    cases = []
    c = tmp / "cannot-act"
    c.mkdir()
    for name, overrides, needle in [
            ("early stopping without eval data", ["--set", "eval.early_stopping_patience=2", "--set",
                                                  "data.val_fraction=0"], "early_stopping"),
            ("early stopping with eval_every above max_steps", ["--set", "eval.early_stopping_patience=2", "--set",
                                                                "train.eval_every=1000", "--set", "train.max_steps=10"],
             "eval_every"),
            ("eval_path equal to data.path", ["--set", f"data.eval_path={DATA}", "--set", f"data.path={DATA}"],
             "eval_path")]:
        cases.append(_case("settings that cannot act", name, ["validate", TINY, *overrides], c, needle))
    code, out, err = cli(["validate", TINY, "--set", "launch.cpu_offload=true"])
    cases.append(Case("settings that cannot act", "cpu_offload on a run that shards nothing (said, or refused)",
                      "cpu_offload" in out + err and (code == 0 or one_line(code, out, err)), False,
                      (out + err).strip()[-200:]))
    code, out, err = cli(["generate", finished, "--prompt", "2+2=", "--max-new-tokens", "4000"])  # 512 positions
    cases.append(Case("settings that cannot act", "generation past the model's position limit (capped and said, or "
                      "refused)", ("position" in out + err or "max_position" in out + err)
                      and (code == 0 or one_line(code, out, err)), False, (out + err).strip()[-200:]))
    odd = c / "odd-arch.yaml"
    odd.write_text(TINY.read_text().replace("num_key_value_heads: 2", "num_key_value_heads: 3"))
    cases.append(_case("settings that cannot act", "validate refuses what run refuses (kv heads not dividing heads)",
                       ["validate", odd], c, "num_key_value_heads"))
    return cases


# --- 4. external services fail before the run is published --------------------------------------------------

def service_cases(tmp: Path) -> list[Case]:
    cases = []
    env_cases = [("W&B without credentials", "wandb", {"WANDB_API_KEY": None, "WANDB_MODE": None}, "wandb"),
                 ("W&B with an empty API key", "wandb", {"WANDB_API_KEY": "", "WANDB_MODE": None}, "wandb"),
                 ("MLflow at an unreachable server", "mlflow", {"MLFLOW_TRACKING_URI": "http://127.0.0.1:9"}, "mlflow"),
                 ("MLflow at a malformed URI", "mlflow", {"MLFLOW_TRACKING_URI": "http://[::1"}, "mlflow"),
                 ("MLflow at an unknown host", "mlflow", {"MLFLOW_TRACKING_URI": "http://no-such-host.invalid:5000"},
                  "mlflow")]
    for name, tracker, env, needle in env_cases:
        c = tmp / name.replace(" ", "-").replace("&", "")
        c.mkdir()
        saved = {k: os.environ.get(k) for k in env}
        for k, v in env.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
        os.environ["HOME"], home = str(c), os.environ.get("HOME", "")  # no ~/.netrc credentials
        try:
            out_dir = c / "out"
            handled, data_lost, detail = refusal(["run", TINY, "--out", out_dir, *SHORT, "--set",
                                                  f"train.report_to=[{tracker}]"], c, needle)
            blocking = out_dir.exists() and any(out_dir.iterdir())
            cases.append(Case("external services checked first", name, handled and not blocking, data_lost,
                              detail + (" (left a folder that blocks the corrected command)" if blocking else "")))
        finally:
            os.environ["HOME"] = home
            for k, v in saved.items():
                os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    return cases


# --- 5. resume consistent for every file; --allow-changes refuses what a checkpoint cannot survive -------------

def resume_consistency_cases(tmp: Path, finished: Path) -> list[Case]:
    cases = []
    for name, override in [("a new LoRA rank", "lora.r=4"), ("new LoRA targets", "lora.targets=[q_proj]"),
                           ("new modules_to_save", "lora.modules_to_save=[lm_head]"),
                           ("a new LoRA init", "lora.init=pissa"), ("another optimizer",
                                                                    "train.optimizer=adamw-8bit")]:
        run = copy_of(finished, tmp / f"allow-{name.replace(' ', '-')}", interrupted=True)
        handled, data_lost, detail = refusal(["run", TINY, "--out", run, "--resume", "--allow-changes", *SHORT,
                                              "--set", override], run, override.split("=")[0])
        cases.append(Case("resume consistent", f"--allow-changes with {name}", handled, data_lost, detail))
    return cases


# --- 6. internal errors become one line naming the file, flag or field ---------------------------------------

def one_line_cases(tmp: Path, finished: Path) -> list[Case]:
    cases = []
    c = tmp / "one-line"
    c.mkdir()
    damaged = copy_of(finished, c / "damaged-adapter")
    (damaged / "adapter" / "adapter_model.safetensors").write_bytes(b"not safetensors")
    cases.append(_case("one line for every error", "generate with a damaged adapter file",
                       ["generate", damaged, "--prompt", "hi"], damaged, "adapter"))
    config = copy_of(finished, c / "damaged-config")
    (config / "adapter" / "adapter_config.json").write_text("{not json")
    cases.append(_case("one line for every error", "generate with a damaged adapter_config.json",
                       ["generate", config, "--prompt", "hi"], config, "adapter_config.json"))
    for name, rows in [("one row", 1), ("no rows", 0)]:
        path = c / f"rows-{rows}.yaml"
        text = (ROOT / "bench" / "published" / "rows.yaml").read_text()
        first = text.split("\n- id: ")
        path.write_text("[]\n" if rows == 0 else first[0] + "\n")
        cases.append(_case("one line for every error", f"calibrate from {name}", ["calibrate", path, "--out",
                                                                                   c / f"cal-{rows}.json"], c, path.name))
    for name, args, needle in [("--tokens 1e-320", ["recommend", "--tokens", "1e-320"], "--tokens"),
                               ("--epochs 1,5 (decimal comma)", ["recommend", "--tokens", "2e9", "--epochs", "1,5"],
                                "--epochs"),
                               ("compare --plot with an unsupported suffix", ["compare", finished, "--plot",
                                                                              str(c / "p.docx")], "--plot"),
                               ("compare --plot over its own input", ["compare", finished, "--plot",
                                                                     str(finished / "report.json")], "--plot")]:
        cases.append(_case("one line for every error", name, args, c, needle))
    newer = copy_of(finished, c / "newer-report")
    report = json.loads((newer / "report.json").read_text())
    report["a_key_from_a_newer_version"] = 1
    (newer / "report.json").write_text(json.dumps(report))
    code, out, err = cli(["compare", newer])
    cases.append(Case("one line for every error", "a report from a newer version with one extra key (read, noted)",
                      code == 0, False, (out + err).strip()[-200:]))
    for name, data in [("chat with closed stdin", b""), ("chat with non-UTF-8 input", b"caf\xe9\n")]:
        proc = subprocess.run([sys.executable, "-m", "advisor.cli", "chat", str(finished)], input=data,
                              capture_output=True, cwd=ROOT, timeout=600)
        err = proc.stderr.decode(errors="replace")
        ok = proc.returncode in (0, 2) and "Traceback" not in err and (proc.returncode == 0 or
                                                                         len(err.strip().splitlines()) == 1)
        cases.append(Case("one line for every error", name, ok, False, err.strip()[-200:]))
    return cases


# --- 7. bounded memory for odd data -------------------------------------------------------------------------

ODD_ROW_MB = 10
# A run over a file holding one ODD_ROW_MB-MB row may hold that row's bytes a few times while it reads it (the line,
# the decoded string, the parsed row); it must not cost what tokenizing the whole row would (~2 GB measured before
# rows were cut to the sequence length).
ODD_ROW_RSS_LIMIT_MB = 12 * ODD_ROW_MB
ONE_STEP = ["--set", "train.max_steps=1", "--set", "train.eval_every=0", "--set", "train.checkpoint_every=0"]


def _peak_rss_mb(args: list[str]) -> tuple[int, float, str]:
    """Exit code, peak RSS in MB, and stderr, of `advisor ARGS` in a fresh process."""
    proc = subprocess.run([sys.executable, "-c", "import resource, sys\nfrom advisor.cli import main\n"
                           "code = main(sys.argv[1:])\n"
                           "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
                           "sys.exit(code)", *args], capture_output=True, text=True, cwd=ROOT, timeout=900)
    lines = proc.stderr.strip().splitlines()
    peak = int(lines[-1]) / 1024 if lines and lines[-1].isdigit() else float("nan")
    return proc.returncode, peak, proc.stderr


def odd_data_cases(tmp: Path) -> list[Case]:
    """One training step over data holding one huge row, against one step over the same kind of data without it."""
    cases = []
    c = tmp / "odd-data"
    c.mkdir()
    big = "word " * (ODD_ROW_MB * 1024 * 1024 // 5)
    text_rows = "".join(json.dumps({"text": f"row {i} " * 20}) + "\n" for i in range(50))
    chat_rows = "".join(json.dumps({"messages": [{"role": "user", "content": "q"},
                                                 {"role": "assistant", "content": f"answer {i}"}]}) + "\n"
                        for i in range(50))
    normal = {"instruction": DATA.read_text(), "text": text_rows, "chat": chat_rows}
    baseline = {}
    for fmt, rows in normal.items():
        data = c / f"plain-{fmt}.jsonl"
        data.write_text(rows)
        code, peak, err = _peak_rss_mb(["run", str(_recipe(c / f"plain-{fmt}.yaml", data, fmt, seq_len=256)), "--out",
                                        str(c / f"plain-{fmt}-out"), *ONE_STEP])
        baseline[fmt] = peak if code == 0 else float("nan")
    for name, fmt, row in [("a 10 MB instruction output", "instruction", {"instruction": "a", "output": big}),
                           ("a 10 MB instruction", "instruction", {"instruction": big, "output": "b"}),
                           ("a 10 MB text row", "text", {"text": big}),
                           ("a 10 MB chat message", "chat", {"messages": [{"role": "user", "content": "q"},
                                                                          {"role": "assistant", "content": big}]}),
                           ("a 10 MB row in the middle of the file", "instruction",
                            {"instruction": big, "output": "b"})]:
        data = c / f"{name.replace(' ', '-')}.jsonl"
        rows = normal[fmt].splitlines(keepends=True)
        at = len(rows) // 2 if "middle" in name else 0
        data.write_text("".join(rows[:at]) + json.dumps(row) + "\n" + "".join(rows[at:]))
        code, peak, err = _peak_rss_mb(["run", str(_recipe(c / f"{data.stem}.yaml", data, fmt, seq_len=256)), "--out",
                                        str(c / f"{data.stem}-out"), *ONE_STEP])
        extra = peak - baseline[fmt]
        # trained, or refused in one line naming the file and line (a prompt that leaves no token to learn)
        done = code == 0 or (code == 2 and data.name in err and "line" in err and "Traceback" not in err)
        handled = done and extra < ODD_ROW_RSS_LIMIT_MB
        cases.append(Case("bounded memory for odd rows", name, handled, False,
                          f"exit {code}, one step: peak RSS {peak:.0f} MB, +{extra:.0f} MB over the same data without "
                          f"the row (limit {ODD_ROW_RSS_LIMIT_MB} MB); {error_line(err)[:100] if code else ''}"))
    return cases


CATEGORIES = ("ownership by record", "every data source validated", "settings that cannot act",
              "external services checked first", "resume consistent", "one line for every error",
              "bounded memory for odd rows")


def features_campaign(tmp: Path, finished_run: Callable[[], Path], categories: tuple[str, ...] | None = None
                      ) -> list[Case]:
    """Every case of the chosen categories (all by default); `finished_run` gives the finished tiny run the categories
    that need one copy (trained on first use)."""
    for sub in ("own", "src", "act", "svc", "res", "err", "mem"):
        (tmp / sub).mkdir(parents=True, exist_ok=True)
    groups = {"ownership by record": lambda: ownership_cases(tmp / "own", finished_run()),
              "every data source validated": lambda: data_source_cases(tmp / "src"),
              "settings that cannot act": lambda: cannot_act_cases(tmp / "act", finished_run()),
              "external services checked first": lambda: service_cases(tmp / "svc"),
              "resume consistent": lambda: resume_consistency_cases(tmp / "res", finished_run()),
              "one line for every error": lambda: one_line_cases(tmp / "err", finished_run()),
              "bounded memory for odd rows": lambda: odd_data_cases(tmp / "mem")}
    cases: list[Case] = []
    for name, build in groups.items():
        if categories is None or name in categories:
            cases += build()
    return cases


if __name__ == "__main__":  # a quick look at one category: python -m bench.reliability_features CATEGORY
    import tempfile

    from bench.reliability_safety import finished_run
    with tempfile.TemporaryDirectory() as d:
        os.environ.setdefault("RIGHTSIZE_CACHE_DIR", str(Path(d) / "cache"))
        os.environ["RIGHTSIZE_CONFIG_DIR"] = str(Path(d) / "config")
        chosen = tuple(sys.argv[1:]) or None
        runs: dict[str, Path] = {}
        with cwd(Path(d)):
            results = features_campaign(Path(d) / "f", lambda: runs.get("run") or runs.setdefault(
                "run", finished_run(Path(d))), chosen)
        for case in results:
            print(json.dumps(asdict(case)))
