"""The data-safety campaign of bench/reliability.py: what careful and clumsy users do to run folders, resumes, data
files and recipes. Every case is counted as tried, handled (refused in one line with exit code 2 naming the file or
flag, or carried out correctly) and data lost (a file of the user's, or a finished run, changed or gone).
"""

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.common import ROOT, TINY, cli, error_line

DATA = ROOT / "recipes" / "data" / "tiny-instructions.jsonl"
SHORT = ["--set", "train.max_steps=6", "--set", "train.checkpoint_every=2", "--set", "train.eval_every=0"]
LOCK = ".rightsize-lock"  # ours, rewritten with its holder's pid on every lock: not the user's data
ARCH = ("{arch: {hidden_size: 32, intermediate_size: 64, num_hidden_layers: 2, num_attention_heads: 4, "
        "num_key_value_heads: 2, vocab_size: 259}}")


@dataclass
class Case:
    category: str
    name: str
    handled: bool
    data_lost: bool
    detail: str


def snapshot(root: Path) -> dict[str, bytes]:
    root = Path(root)
    if root.is_file():
        return {root.name: root.read_bytes()}
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.is_symlink() and p.name != LOCK} if root.exists() else {}


def lost(before: dict[str, bytes], after: dict[str, bytes]) -> bool:
    """A file that was there is gone or changed."""
    return any(after.get(name) != data for name, data in before.items())


def one_line(code: int, out: str, err: str) -> bool:
    return code == 2 and "Traceback" not in out + err and len(err.strip().splitlines()) == 1 \
        and err.startswith("advisor: error: ")


@contextmanager
def cwd(path: Path):
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def refusal(args: list, watch: Path, *needles: str, where: Path | None = None) -> tuple[bool, bool, str]:
    """Run the CLI where it should refuse: handled if one line, exit 2, naming `needles`; lost if `watch` changed."""
    before = snapshot(watch)
    with cwd(where or ROOT):
        code, out, err = cli([str(a) for a in args])
    handled = one_line(code, out, err) and all(n in err for n in needles)
    return handled, lost(before, snapshot(watch)), error_line(err)[:200]


# --- shared state: one finished run, copied for each case -------------------------------------------------

def finished_run(tmp: Path) -> Path:
    out = tmp / "finished"
    code, _, err = cli(["run", str(TINY), "--out", str(out), *SHORT])
    assert code == 0, err
    return out


def copy_of(finished: Path, dest: Path, interrupted: bool = False) -> Path:
    shutil.copytree(finished, dest)
    if interrupted:
        (dest / "report.json").unlink()
    return dest


def same_adapter(a: Path, b: Path) -> bool:
    from safetensors.torch import load_file
    x, y = load_file(a / "adapter" / "adapter_model.safetensors"), load_file(b / "adapter" / "adapter_model.safetensors")
    return x.keys() == y.keys() and all(bool((x[k] == y[k]).all()) for k in x)


# --- output folders ----------------------------------------------------------------------------------------

def _folder_kinds(c: Path, finished: Path) -> dict[str, tuple[Path, list[str], Path, Path | None]]:
    """name -> (--out, extra args, what to watch, where to run from)."""
    kinds = {}
    notes = c / "notes"
    (notes / "sub").mkdir(parents=True)
    (notes / "thesis.txt").write_text("years of work")
    (notes / "sub" / "b.md").write_text("more")
    kinds["documents"] = (notes, [], notes, None)
    data = c / "data"
    data.mkdir()
    shutil.copy(DATA, data / "d.jsonl")
    kinds["the data folder"] = (data, ["--set", f"data.path={data / 'd.jsonl'}"], data, None)
    proj = c / "proj" / "src"
    proj.mkdir(parents=True)
    (proj / "main.py").write_text("print('mine')")
    kinds["the current directory"] = (Path("."), [], c / "proj", proj)
    kinds["a parent of the current directory"] = (Path(".."), [], c / "proj", proj)
    foreign = copy_of(finished, c / "run-plus-notes")
    (foreign / "notes.txt").write_text("keep")
    kinds["a run folder holding other files"] = (foreign, [], foreign, None)
    legacy = copy_of(finished, c / "legacy")
    (legacy / ".rightsize-run").unlink()
    kinds["a run folder without the marker"] = (legacy, [], legacy, None)
    (c / "file.txt").write_text("a file")
    kinds["a file"] = (c / "file.txt", [], c / "file.txt", None)
    (c / "link").symlink_to(notes)
    kinds["a symlink to documents"] = (c / "link", [], notes, None)
    holding = copy_of(finished, c / "run-with-data")
    shutil.copy(DATA, holding / "checkpoints" / "d.jsonl")
    kinds["a run folder holding the data"] = (holding, ["--set", f"data.path={holding / 'checkpoints' / 'd.jsonl'}"],
                                              holding, None)
    standing = copy_of(finished, c / "run-as-cwd")
    kinds["a run folder that is the current directory"] = (Path("."), [], standing, standing)
    return kinds


BAD_NAMES = ["../../victim", "", "a/b", "..", ".", "/tmp/victim", "x\\y", "-rf", " ", "a\x00b", "runs/../..",
             "n" * 200]


def output_folder_cases(tmp: Path, finished: Path) -> list[Case]:
    cases = []
    c = tmp / "folders"
    kinds = _folder_kinds(c, finished)
    for kind, (out, extra, watch, where) in kinds.items():
        for flags in ([], ["--overwrite"], ["--resume"]):
            h, l, msg = refusal(["run", TINY, "--out", out, *SHORT, *extra, *flags], watch, where=where)
            cases.append(Case("output folders", f"--out {kind} {' '.join(flags)}".strip(), h, l, msg))
    victim = tmp / "names" / "victim"
    victim.mkdir(parents=True)
    (victim / "keep.txt").write_text("mine")
    work = tmp / "names" / "a" / "b"
    work.mkdir(parents=True)
    for name in BAD_NAMES:
        for command in (["validate", TINY], ["run", TINY], ["run", TINY, "--overwrite"]):
            h, l, msg = refusal([*command, "--set", f"name={json.dumps(name)}"], tmp / "names", "name", where=work)
            h = h and not (work / "runs").exists()
            cases.append(Case("output folders", f"recipe name {name[:20]!r} ({' '.join(map(str, command[:1] + command[2:]))})",
                              h, l, msg))
    bad_rows = tmp / "bad-rows.jsonl"
    bad_rows.write_text(DATA.read_text() + '{"instruction": null, "output": "x"}\n')
    latin = tmp / "latin1.jsonl"
    latin.write_bytes(DATA.read_bytes() + '{"instruction": "caf\xe9", "output": "x"}\n'.encode("latin-1"))
    for name, override, needle in [("typo in data.path", "data.path=typo.jsonl", "typo.jsonl"),
                                   ("lora.r 0", "lora.r=0", "lora.r"), ("lora.r 4096", "lora.r=4096", "lora.r"),
                                   ("an invalid row", f"data.path={bad_rows}", "line 601"),
                                   ("non-UTF-8 data", f"data.path={latin}", "byte"),
                                   ("seq_len over the model's", "data.seq_len=100000", "seq_len"),
                                   ("a model folder that does not exist", "model={name: ./no-such-model}", "model.name")]:
        run = copy_of(finished, tmp / "failed-starts" / name.replace(" ", "-"))
        h, l, msg = refusal(["run", TINY, "--out", run, "--overwrite", *SHORT, "--set", override], run, needle)
        cases.append(Case("output folders", f"failed start with --overwrite: {name}", h, l, msg))
    run = copy_of(finished, tmp / "replaced" / "run")
    old_id = json.loads((run / ".rightsize-run").read_text())["run_id"]
    code, _, err = cli(["run", str(TINY), "--out", str(run), "--overwrite", "--set", "train.max_steps=2"])
    new = json.loads((run / ".rightsize-run").read_text()) if (run / ".rightsize-run").exists() else {}
    ok = code == 0 and new.get("run_id") != old_id and sorted(p.name for p in run.parent.iterdir()) == ["run"]
    cases.append(Case("output folders", "--overwrite of a finished run (replaced, old one moved aside then removed)",
                      ok, False, "ok" if ok else error_line(err)))
    return cases


# --- concurrent writers ------------------------------------------------------------------------------------

HOLD = ("import sys; from runners.rundir import RunFolder; "
        "f = RunFolder.open(sys.argv[1], resume=sys.argv[2] == 'resume', overwrite=False, protect={}); "
        "print('locked', flush=True); sys.stdin.read(); f.close()")


def concurrent_cases(tmp: Path, finished: Path) -> list[Case]:
    cases = []
    for name, mode, flags in [("--resume while another process resumes", "resume", ["--resume"]),
                              ("--overwrite while another process resumes", "resume", ["--overwrite"]),
                              ("a fresh run into a folder another fresh run holds", "fresh", [])]:
        target = copy_of(finished, tmp / "locks" / name.replace(" ", "-"), interrupted=True) if mode == "resume" \
            else tmp / "locks" / "fresh"
        holder = subprocess.Popen([sys.executable, "-c", HOLD, str(target), mode], cwd=ROOT, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        holder.stdout.readline()
        h, l, msg = refusal(["run", TINY, "--out", target, *SHORT, *flags], target, "in use", f"pid {holder.pid}")
        holder.stdin.close()
        holder.wait()
        cases.append(Case("concurrent writers", name, h, l, msg))
    run = copy_of(finished, tmp / "race" / "run", interrupted=True)
    first = subprocess.Popen([sys.executable, "-m", "advisor.cli", "run", str(TINY), "--out", str(run), *SHORT, "--resume"],
                             cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while f"pid {first.pid}" not in ((run / LOCK).read_text() if (run / LOCK).exists() else "") and time.time() < deadline:
        time.sleep(0.02)
    h, l, msg = refusal(["run", TINY, "--out", run, *SHORT, "--resume"], finished, "in use", f"pid {first.pid}")
    code = first.wait()
    ok = h and code == 0 and same_adapter(finished, run)
    cases.append(Case("concurrent writers", "two --resume processes on one folder (the second refused, the first "
                      "finishes with the uninterrupted run's adapter)", ok, l, msg))
    return cases


# --- resume with changes -----------------------------------------------------------------------------------

CHANGES = ["train.lr=0.5", "lora.r=8", "lora.alpha=8", "lora.dropout=0.1", "train.seed=1", "data.seq_len=384",
           "train.max_steps=7", "train.micro_batch=2", "data.packing=false", "train.schedule=linear",
           "model.arch.num_hidden_layers=3", "lora.targets=[q_proj]", "data.val_fraction=0.1", "train.grad_accum=2"]


def resume_cases(tmp: Path, finished: Path) -> list[Case]:
    cases = []
    base = copy_of(finished, tmp / "resume" / "run", interrupted=True)
    for change in CHANGES:
        h, l, msg = refusal(["run", TINY, "--out", base, *SHORT, "--resume", "--set", change], base,
                            change.split("=")[0], "--allow-changes")
        cases.append(Case("resume with changes", f"--resume --set {change}", h, l, msg))
    other = tmp / "resume" / "other.jsonl"
    other.write_text(DATA.read_text().replace("yellow", "purple"))
    h, l, msg = refusal(["run", TINY, "--out", base, *SHORT, "--resume", "--set", f"data.path={other}"], base, "content changed")
    cases.append(Case("resume with changes", "--resume with other data", h, l, msg))
    done = copy_of(finished, tmp / "resume" / "done")
    h, l, msg = refusal(["run", TINY, "--out", done, *SHORT, "--resume", "--set", "train.lr=0.5"], done, "already complete")
    cases.append(Case("resume with changes", "--resume --set train.lr=0.5 on a finished run", h, l, msg))
    h, l, msg = refusal(["run", TINY, "--out", tmp / "resume" / "typo", *SHORT, "--resume"], tmp / "resume", "check --out")
    cases.append(Case("resume with changes", "--resume with a typo in --out", h and not (tmp / "resume" / "typo").exists(), l, msg))
    h, l, msg = refusal(["run", TINY, "--out", base, *SHORT, "--resume", "--overwrite"], base, "choose one")
    cases.append(Case("resume with changes", "--resume --overwrite", h, l, msg))
    allowed = copy_of(finished, tmp / "resume" / "allowed", interrupted=True)
    code, _, err = cli(["run", str(TINY), "--out", str(allowed), *SHORT, "--resume", "--allow-changes",
                        "--set", "train.lr=0.001"])
    report = json.loads((allowed / "report.json").read_text()) if code == 0 else {}
    ok = report.get("resume_changes") == ["at step 4: train.lr 0.003 -> 0.001"]
    cases.append(Case("resume with changes", "--resume --allow-changes (continues, recorded in report.json)", ok, False,
                      "ok" if ok else error_line(err)))
    return cases


# --- corrupted state ---------------------------------------------------------------------------------------

def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def corrupted_cases(tmp: Path, finished: Path) -> list[Case]:
    cases = []
    root = tmp / "corrupt"
    steps = ("step-00000002", "step-00000004")
    damage: dict[str, Callable[[Path], None]] = {
        "both checkpoints truncated": lambda r: [_truncate(r / "checkpoints" / s / "trainer.pt") for s in steps],
        "both state.json garbage": lambda r: [(r / "checkpoints" / s / "state.json").write_bytes(b"\xff{") for s in steps],
        "both trainer.pt deleted": lambda r: [(r / "checkpoints" / s / "trainer.pt").unlink() for s in steps],
        "checkpoints is a file": lambda r: (shutil.rmtree(r / "checkpoints"), (r / "checkpoints").write_text("x")),
        "marker garbage": lambda r: (r / ".rightsize-run").write_bytes(b"\x00garbage"),
    }
    for name, hurt in damage.items():
        run = copy_of(finished, root / name.replace(" ", "-"), interrupted=True)
        hurt(run)
        h, l, msg = refusal(["run", TINY, "--out", run, *SHORT, "--resume"], run, str(run.name))
        cases.append(Case("corrupted state", f"--resume with {name}", h, l, msg))
    for name, content in [("invalid bytes", b'{"recipe": "\xc3\x28"}'), ("truncated", b'{"recipe": "x", "st'),
                          ("deeply nested", b"[" * 100_000 + b"]" * 100_000)]:
        run = root / f"report-{name.replace(' ', '-')}"
        run.mkdir(parents=True)
        (run / "report.json").write_bytes(content)
        h, l, msg = refusal(["compare", run], run, "report.json")
        cases.append(Case("corrupted state", f"report.json {name} (compare)", h, l, msg))
    run = copy_of(finished, root / "newest-truncated", interrupted=True)
    _truncate(run / "checkpoints" / "step-00000004" / "trainer.pt")
    lines = (run / "metrics.jsonl").read_text().splitlines(keepends=True)
    (run / "metrics.jsonl").write_text(lines[0] + '{"step": 1.5, "lo\x00\n' + "".join(lines[1:]))
    code, _, err = cli(["run", str(TINY), "--out", str(run), *SHORT, "--resume"])
    metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()] if code == 0 else []
    ok = code == 0 and "falling back" in err and same_adapter(finished, run) and \
        [m["loss"] for m in metrics if "loss" in m] == [json.loads(x)["loss"] for x in lines if '"loss"' in x]
    cases.append(Case("corrupted state", "newest checkpoint truncated and a damaged metrics line (resumes from the "
                      "previous one, keeps every intact line, same adapter)", ok, False, "ok" if ok else error_line(err)))
    return cases


# --- data files of every format ------------------------------------------------------------------------------

def _write(path: Path, fmt: str, rows: list) -> None:
    """rows as a .jsonl/.json/.csv/.parquet file or a save_to_disk folder."""
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif fmt == "json":
        path.write_text(json.dumps(rows))
    elif fmt == "csv":
        import csv
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(list(rows[0]))
            writer.writerows([list(r.values()) for r in rows])
    else:
        import datasets
        ds = datasets.Dataset.from_list(rows)
        ds.to_parquet(str(path)) if fmt == "parquet" else ds.save_to_disk(str(path))


GOOD_TEXT = {"text": "hello world"}
ROW_DEFECTS = {  # name -> (format of the recipe, rows, which file formats can hold it, what the message names)
    "a null text field": ("text", [GOOD_TEXT, {"text": None}], ("jsonl", "json", "parquet", "dir"), "is null"),
    "a list as text": ("text", [{"text": ["a"]}, {"text": ["b", "c"]}], ("jsonl", "json", "parquet", "dir"), "is a list"),
    "a missing text field": ("text", [GOOD_TEXT, {"body": "x"}], ("jsonl", "json"), "missing field 'text'"),
    "an empty text field": ("text", [GOOD_TEXT, {"text": ""}], ("jsonl", "json", "csv", "parquet", "dir"), "is empty"),
    # a number as text is read as its digits since every source is validated alike (an instruction's `input: 0` is
    # "0", not empty): bench/reliability_features.py checks that reading
    "a null output": ("instruction", [{"instruction": "a", "output": "b"}, {"instruction": "a", "output": None}],
                      ("jsonl", "json", "parquet", "dir"), "'output' is null"),
    "an empty messages list": ("chat", [{"messages": []}], ("jsonl", "json"), "empty list of messages"),
    "an unknown role": ("chat", [{"messages": [{"role": "robot", "content": "x"}]}], ("jsonl", "json", "parquet"),
                        "is not one of"),
    "a null message content": ("chat", [{"messages": [{"role": "user", "content": None}]}], ("jsonl", "json"), "is null"),
    "messages that are a string": ("chat", [{"messages": "hi"}], ("jsonl", "json"), "is a string"),
    "system-only chats": ("chat", [{"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]}] * 3,
                          ("jsonl", "json", "parquet"), "no token carries loss"),
    "prompts longer than seq_len": ("instruction", [{"instruction": "x" * 300, "output": "y"}] * 3, ("jsonl", "csv"),
                                    "no token carries loss"),
}
FILE_DEFECTS = {  # name -> (file name, bytes or None for a folder, what the message names)
    "an empty .jsonl": ("empty.jsonl", b"", "no examples"),
    "an empty .csv": ("empty.csv", b"", "no examples"),
    "an empty .json array": ("empty.json", b"[]", "no examples"),
    "non-UTF-8 bytes in .jsonl": ("latin.jsonl", b'{"text": "ok"}\n{"text": "caf\xe9"}\n', "byte 28 (line 2)"),
    "non-UTF-8 bytes in .csv": ("latin.csv", b"text\nok\ncaf\xe9\n", "byte 11 (line 3)"),
    "non-UTF-8 bytes in .json": ("latin.json", b'[{"text": "caf\xe9"}]', "byte 14"),
    "a malformed line deep in .jsonl": ("deep.jsonl", b'{"text": "ok"}\n' * 999 + b'{"text": "no end\n', "line 1000"),
    "a malformed .json array": ("bad.json", b'[{"text": "a"},\n {"text": }]', "line 2"),
    "an unterminated CSV quote": ("quote.csv", b'text\nok\n"never closed\nmore\n', "line 3"),
    "a CSV row with extra cells": ("cells.csv", b"text\nok\na,b\n", "line 3"),
    "a garbage parquet": ("garbage.parquet", b"PAR1 not really", "not a readable Parquet"),
    "a .txt file": ("notes.txt", b"hello", "unsupported file type"),
    "a folder that is not a dataset": ("folder", None, "save_to_disk"),
    "a JSON object instead of rows": ("object.jsonl", b'[1, 2]\n"str"\n', "line 1"),
}


def _recipe(path: Path, data: Path, fmt: str, **extra) -> Path:
    fields = "".join(f", {k}: {v}" for k, v in extra.items())
    path.write_text(f"name: t\nmodel: {ARCH}\ndata: {{path: {data}, format: {fmt}, seq_len: 64, val_fraction: 0.0"
                    f"{fields}}}\ntrain: {{max_steps: 2, micro_batch: 1}}\n")
    return path


def data_cases(tmp: Path, kinds: tuple[str, ...] = ("jsonl", "json", "csv", "parquet", "dir")) -> list[Case]:
    cases = []
    root = tmp / "data"
    root.mkdir(parents=True)
    for name, (fmt, rows, holders, needle) in ROW_DEFECTS.items():
        for kind in (k for k in holders if k in kinds):
            c = root / f"{name.replace(' ', '-')}-{kind}"
            c.mkdir()
            data = c / (f"d.{kind}" if kind != "dir" else "d")
            _write(data, kind, rows)
            h, l, msg = refusal(["run", _recipe(c / "r.yaml", data, fmt), "--out", c / "out"], c, data.name, needle)
            cases.append(Case("data files", f"{name} ({kind})", h and not (c / "out").exists(), l, msg))
    c = root / "input-field"
    c.mkdir()
    _write(c / "d.jsonl", "jsonl", [{"instruction": "a", "input": "b", "output": "c"}] * 2)
    h, l, msg = refusal(["run", _recipe(c / "r.yaml", c / "d.jsonl", "instruction", input_field="context"), "--out",
                         c / "out"], c, "data.input_field")
    cases.append(Case("data files", "data.input_field naming a field no row has", h, l, msg))
    for name, (file_name, content, needle) in FILE_DEFECTS.items():
        kind = "dir" if content is None else Path(file_name).suffix.lstrip(".")
        if kind in ("jsonl", "json", "csv", "parquet", "dir") and kind not in kinds:
            continue
        c = root / name.replace(" ", "-")
        c.mkdir()
        data = c / file_name
        data.mkdir() if content is None else data.write_bytes(content)
        h, l, msg = refusal(["run", _recipe(c / "r.yaml", data, "text"), "--out", c / "out"], c, file_name, needle)
        cases.append(Case("data files", name, h and not (c / "out").exists(), l, msg))
    return cases


# --- adversarial recipes and side files ----------------------------------------------------------------------

def recipe_cases(tmp: Path) -> list[Case]:
    cases = []
    root = tmp / "recipes"
    root.mkdir(parents=True)
    deep = root / "deep.yaml"
    deep.write_text("name: t\nx: " + "[" * 5000 + "]" * 5000 + "\n")
    for command in ("validate", "estimate", "run"):
        h, l, msg = refusal([command, deep, *(["--out", root / "o"] if command == "run" else [])], root, "deep.yaml")
        cases.append(Case("adversarial recipes", f"deeply nested YAML ({command})", h, l, msg))
    for override, needle in [("lora.r=4096", "exceeds"), ("lora.r=100", "exceeds"), ("name=../x", "name"),
                             ("data.seq_len=100000", "seq_len"), ("train.lr=nan", "train.lr")]:
        h, l, msg = refusal(["validate", TINY, "--set", override], root, needle)
        cases.append(Case("adversarial recipes", f"--set {override}", h, l, msg))
    only_config = root / "only-config"
    only_config.mkdir()
    (only_config / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 32, "intermediate_size": 64,
                                                         "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 259}))
    for name, model in [("a model folder with only a config", only_config), ("a model path that does not exist",
                                                                              root / "no-model")]:
        recipe = root / f"{model.name}.yaml"
        recipe.write_text(f"name: local\nmodel: {{name: {model}}}\ndata: {{path: {DATA}, format: instruction, seq_len: 64}}\n")
        for command in ("validate", "run"):
            h, l, msg = refusal([command, recipe, *(["--out", root / "o"] if command == "run" else [])], root, "model.name")
            cases.append(Case("adversarial recipes", f"{name} ({command})", h and not (root / "o").exists(), l, msg))
    merge = root / "merge.yaml"
    merge.write_text(f"name: merged\nmodel: {ARCH}\ndata: {{path: {DATA}, format: instruction, seq_len: 64}}\n"
                     "lora:\n  <<: {r: 8, alpha: 16}\n  alpha: 32\n")
    code, out, err = cli(["validate", str(merge)])
    cases.append(Case("adversarial recipes", "a YAML merge key (accepted)", code == 0, False, out.strip() or error_line(err)))
    dupe = root / "dupe.yaml"
    dupe.write_text(merge.read_text() + "  alpha: 8\n")
    h, l, msg = refusal(["validate", dupe], root, "duplicate key")
    cases.append(Case("adversarial recipes", "a merge key with a duplicated explicit key", h, l, msg))
    cell = {"gpu": "H100-SXM", "method": "lora", "runs": 3, "efficiency": 0.4, "efficiency_min": 0.35, "efficiency_max": 0.45,
            "memory_overhead_fraction": 0.1, "memory_overhead_min": 0.05, "memory_overhead_max": 0.15}
    for name, change in [("a negative memory overhead", {"memory_overhead_fraction": -3.0}),
                         ("efficiency above 1", {"efficiency": 1.5}), ("efficiency 0", {"efficiency": 0}),
                         ("a NaN efficiency", {"efficiency": "NaN"})]:
        path = root / f"cal-{name.replace(' ', '-')}.json"
        path.write_text(json.dumps({"entries": [cell | change]}))
        h, l, msg = refusal(["estimate", "--model", "Llama-3.1-8B", "--gpu", "H100", "--tokens", "1e8", "--calibration", path],
                            root, path.name)
        cases.append(Case("adversarial recipes", f"a calibration file with {name}", h, l, msg))
    binary = root / "cal-binary.json"
    binary.write_bytes(b'{"entries": [\xff]}')
    h, l, msg = refusal(["estimate", "--model", "Llama-3.1-8B", "--gpu", "H100", "--calibration", binary], root, "byte")
    cases.append(Case("adversarial recipes", "a calibration file with invalid bytes", h, l, msg))
    return cases


def safety_campaign(tmp: Path, categories: tuple[str, ...] | None = None) -> dict:
    """Every case of every category; per category: tried, handled, data lost (which must be 0)."""
    tmp.mkdir(parents=True, exist_ok=True)
    shared: dict[str, Path] = {}

    def finished() -> Path:  # trained once, only for the categories that need a run
        if "run" not in shared:
            shared["run"] = finished_run(tmp)
        return shared["run"]
    groups = {"output folders": lambda: output_folder_cases(tmp / "a", finished()),
              "concurrent writers": lambda: concurrent_cases(tmp / "b", finished()),
              "resume with changes": lambda: resume_cases(tmp / "c", finished()),
              "corrupted state": lambda: corrupted_cases(tmp / "d", finished()),
              "data files": lambda: data_cases(tmp / "e"), "adversarial recipes": lambda: recipe_cases(tmp / "f")}
    cases: list[Case] = []
    for name, build in groups.items():
        if categories is None or name in categories:
            cases += build()
    summary = {}
    for case in cases:
        row = summary.setdefault(case.category, {"tried": 0, "handled": 0, "data_lost": 0})
        row["tried"] += 1
        row["handled"] += case.handled
        row["data_lost"] += case.data_lost
    return {"categories": summary, "cases": [asdict(c) for c in cases],
            "not_handled": [asdict(c) for c in cases if not c.handled or c.data_lost]}
