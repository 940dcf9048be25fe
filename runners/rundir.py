"""Run folders are the user's property: Rightsize marks the folders it writes, holds one lock per folder, replaces only
its own runs (moved aside once the new run's inputs have loaded, removed after its first step), and resumes only the
same run.

Ownership is by record, never by name: a run deletes, moves or replaces only the entries its marker's manifest lists
(and adapter/ and merged/ only while their own OUTPUT_MARKER names the run); anything else is refused in one line.

- a run folder carries `.rightsize-run` (MARKER): a run id, the fingerprints of its resolved recipe and data, and
  `owned`, the top-level entries the run created (each recorded by `claim` just before the run first writes it);
- `.rightsize-lock` (LOCK) is held with an exclusive `fcntl.flock` for the lifetime of a run or resume and names
  its holder (pid, host);
- `--overwrite` replaces a folder only if it has the marker, holds nothing the run did not record, and contains
  neither the data, the recipe nor the current directory;
- a folder of an older Rightsize (a marker without `owned`) keeps working the safe way: its single files of our
  names (LEGACY_FILES) and a checkpoints/ holding only checkpoints are adopted; adapter/, merged/ and the trackers'
  folders are not provably its (they carry no OUTPUT_MARKER), so nothing replaces or deletes them;
- a start that fails before the first optimizer step leaves the folder as it found it (`rollback`): a fresh
  folder is emptied of what the run created, a replaced run is moved back, a resume's marker is restored.
"""

import errno
import fcntl
import json
import os
import shutil
import socket
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from advisor.core.errors import AdvisorError

MARKER = ".rightsize-run"
LOCK = ".rightsize-lock"
OUTPUT_MARKER = ".rightsize-output"  # inside adapter/ and merged/: the run id of the run that wrote the folder
# Everything `advisor run` may write at the top of a run folder (what an unmarked folder of an older run would hold).
RUN_ENTRIES = frozenset({MARKER, LOCK, "recipe.resolved.yaml", "metrics.jsonl", "report.json", "checkpoints",
                         "adapter", "merged", ".adapter.tmp", ".adapter.old", ".merged.tmp", ".merged.old",
                         "samples.jsonl", "tensorboard", "mlruns", "wandb"})  # eval samples and the trackers' logs
OUTPUT_DIRS = frozenset({"adapter", "merged"})  # replaced whole at the end of a run: each carries OUTPUT_MARKER
# A marker without a manifest (an older Rightsize): the entries adopted as its own, being files no user names so
LEGACY_FILES = frozenset({"recipe.resolved.yaml", "metrics.jsonl", "report.json", "samples.jsonl"})
TRACKER_DIRS = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlruns"}  # train.report_to -> its folder
MARKER_VERSION = 2  # 2: the marker lists the entries the run created (`owned`)


def _is_run_entry(name: str) -> bool:
    """A name the runner writes: RUN_ENTRIES, or an atomic write's temporary `.NAME.XXXX.tmp` of one of them."""
    if name in RUN_ENTRIES:
        return True
    return name.startswith(".") and name.endswith(".tmp") and any(name.startswith(f".{e}.") for e in RUN_ENTRIES)


def _temporary_of(name: str, owned: set[str]) -> bool:
    """`.NAME.tmp`, `.NAME.old` or an atomic write's `.NAME.XXXX.tmp` of an owned NAME: transient, so the run's."""
    return name.startswith(".") and (name.endswith(".tmp") or name.endswith(".old")) and \
        any(name.startswith(f".{e}.") for e in owned)


def owned_entries(folder: Path, marker: dict) -> set[str]:
    """The top-level entries the run recorded as created; for an older run's marker (no manifest) the ones adopted:
    LEGACY_FILES that are plain files, and checkpoints/ when it holds nothing but `step-*` checkpoints."""
    if isinstance(marker.get("owned"), list):
        return {str(name) for name in marker["owned"]} | {MARKER}
    folder = Path(folder)
    adopted = {MARKER} | {name for name in LEGACY_FILES if (folder / name).is_file() and not (folder / name).is_symlink()}
    checkpoints = folder / "checkpoints"
    if checkpoints.is_dir() and not checkpoints.is_symlink() and \
            all(p.name.lstrip(".").startswith("step-") for p in checkpoints.iterdir()):
        adopted.add("checkpoints")
    return adopted


def is_ours(folder: Path, name: str, marker: dict, owned: set[str] | None = None) -> bool:
    """Whether the run of `marker` provably created the entry `name` of `folder` (the lock is always ours)."""
    owned = owned_entries(folder, marker) if owned is None else owned
    if name == LOCK or _temporary_of(name, owned):
        return True
    if name not in owned:
        return False
    path = Path(folder) / name
    if name in OUTPUT_DIRS and path.is_dir():  # replaced whole: its own marker must name this run, and list its files
        return output_run_id(path) == marker.get("run_id") and output_files_unchanged(path)
    if name == "checkpoints" and path.is_dir():  # replaced whole too: nothing in it but checkpoints
        return checkpoints_only(path)
    return True


def foreign_entries(folder: Path, marker: dict) -> list[str]:
    """The folder's top-level entries its run did not provably create, sorted."""
    owned = owned_entries(folder, marker)
    return sorted(p.name for p in Path(folder).iterdir() if not is_ours(folder, p.name, marker, owned))


def output_run_id(folder: Path) -> str | None:
    """The run id in an output folder's OUTPUT_MARKER, or None."""
    try:
        record = json.loads((Path(folder) / OUTPUT_MARKER).read_text())
    except (OSError, ValueError):
        return None
    return record.get("run_id") if isinstance(record, dict) else None


def _files_under(folder: Path) -> list[str]:
    """Every file under `folder` (relative paths, sorted), its OUTPUT_MARKER aside."""
    folder = Path(folder)
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                  if (p.is_file() or p.is_symlink()) and p.name != OUTPUT_MARKER)


def output_files_unchanged(folder: Path) -> bool:
    """The output folder holds exactly the files its OUTPUT_MARKER lists: a file the user added (or a folder swapped
    in) makes it not provably the run's, so nothing replaces it. A marker without the list (written before it was
    kept) vouches for the folder by its run id alone."""
    try:
        record = json.loads((Path(folder) / OUTPUT_MARKER).read_text())
    except (OSError, ValueError):
        return False
    listed = record.get("files") if isinstance(record, dict) else None
    return listed is None or sorted(map(str, listed)) == _files_under(folder)


# What a checkpoint directory holds (runners.checkpoint): the trainer state and the loop state beside it.
CHECKPOINT_FILES = frozenset({"trainer.pt", "state.json"})


def checkpoints_only(folder: Path) -> bool:
    """checkpoints/ holds nothing but `step-*` checkpoint directories (or their `.step-*` temporaries) of
    CHECKPOINT_FILES: anything else in it is not the run's."""
    for entry in Path(folder).iterdir():
        if not entry.name.lstrip(".").startswith("step-") or not entry.is_dir() or entry.is_symlink():
            return False
        if any(not f.is_file() or f.name not in CHECKPOINT_FILES for f in entry.iterdir()):
            return False
    return True


def mark_output(tmp_dir: Path, run_dir: Path) -> None:
    """Write OUTPUT_MARKER (the run id of `run_dir`'s marker, and the files the folder holds) into an output folder,
    once it is written and before it is published."""
    marker = read_marker(run_dir)
    if marker is not None:
        (Path(tmp_dir) / OUTPUT_MARKER).write_text(json.dumps({"run_id": marker["run_id"],
                                                               "files": _files_under(tmp_dir)}) + "\n")


def claim(run_dir: Path, *names: str) -> None:
    """Record top-level entries in the run's manifest before the run first writes them; refuses, in one line, an
    entry that exists and is not provably this run's (nothing is written then). Rank 0 only."""
    from runners.io import atomic_write_text
    run_dir = Path(run_dir)
    marker = read_marker(run_dir)
    owned = owned_entries(run_dir, marker) if marker is not None else set()
    for name in names:
        path = run_dir / name
        if os.path.lexists(path) and (marker is None or not is_ours(run_dir, name, marker, owned)):
            raise AdvisorError(f"{path}: exists and is not this run's (not recorded in {run_dir / MARKER}); "
                               "the run would write over it: move it out of the run folder, or choose another --out")
    if marker is not None and not (set(names) <= owned and isinstance(marker.get("owned"), list)):
        marker["owned"] = sorted(owned | set(names))
        atomic_write_text(run_dir / MARKER, json.dumps(marker, indent=2))


def planned_entries(recipe) -> list[str]:
    """The top-level entries a run of `recipe` writes after its start (the marker and recipe aside)."""
    names = ["metrics.jsonl", "checkpoints", "report.json", "adapter"]
    names += ["merged"] if recipe.train.merge else []
    names += ["samples.jsonl"] if recipe.eval.samples else []
    return names + tracker_entries(recipe)


def tracker_entries(recipe) -> list[str]:
    """The folders the recipe's trackers write in the run folder (MLflow with a tracking server writes none)."""
    return [TRACKER_DIRS[t] for t in recipe.train.report_to if t != "mlflow" or not os.environ.get("MLFLOW_TRACKING_URI")]


def read_marker(folder: Path) -> dict | None:
    """The folder's marker, or None when it has none (or an unreadable one: then it is not provably ours)."""
    try:
        marker = json.loads((Path(folder) / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and isinstance(marker.get("run_id"), str) else None


def _contains(outer: Path, inner: Path) -> bool:
    return inner == outer or outer in inner.parents


def _protected(out: Path, protect: dict[str, Path]) -> str | None:
    """What of the user's the folder holds (the data, the recipe, the current directory), if anything."""
    for what, path in protect.items():
        if path is not None and _contains(out, Path(path).expanduser().resolve()):
            return f"{what} ({path})"
    return None


@dataclass
class RunFolder:
    """Rank 0's handle on a run folder: which way it is being used, and the lock it holds."""

    path: Path
    mode: str                         # fresh, resume or replace
    marker: dict | None = None        # the existing run's marker (resume, replace)
    created: list[Path] = field(default_factory=list)  # folders this process made (fresh), leaf first: removed if
                                                        # the run never starts
    published: bool = False
    committed: bool = False           # the run made its first step: no rollback from here on
    _aside: Path | None = None        # replace: the old run, moved aside until commit
    _undo: dict[str, bytes] = field(default_factory=dict)  # resume: the marker and files as they were before publish
    _lock_fd: int | None = None
    _old_lock_fd: int | None = None
    changes: list[str] = field(default_factory=list)

    # --- opening ------------------------------------------------------------------------------------------
    @classmethod
    def open(cls, out_dir: Path, resume: bool, overwrite: bool, protect: dict[str, Path]) -> "RunFolder":
        """Decide how the folder may be used and take its lock; refuses, in one line, anything that could lose data."""
        out = Path(out_dir).expanduser().resolve()
        if resume and overwrite:
            raise AdvisorError("--resume and --overwrite: choose one (continue the run, or replace it)")
        if out.exists() and not out.is_dir():
            raise AdvisorError(f"--out {out_dir}: is a file, expected a run folder")
        entries = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
        empty = not [e for e in entries if e != LOCK]
        marker = read_marker(out) if entries else None
        if resume:
            if empty:
                raise AdvisorError(f"--resume: {out_dir} holds no run to resume (no checkpoint); check --out, "
                                   "or drop --resume to start one")
            if marker is None:
                raise AdvisorError(f"--resume: {out_dir} is not a Rightsize run folder (no {MARKER} marker); check --out")
            folder = cls(out, "resume", marker)
        elif empty:
            created = [p for p in (out, *out.parents) if not p.exists()]  # removed again if the run never starts
            folder = cls(out, "fresh", created=created)
            out.mkdir(parents=True, exist_ok=True)
        elif marker is None:
            legacy = "recipe.resolved.yaml" in entries and all(_is_run_entry(e) for e in entries)
            raise AdvisorError(f"--out {out_dir} holds files Rightsize did not write (no {MARKER} marker"
                               f"{'; a run of an older Rightsize? delete it yourself to reuse the name' if legacy else ''}): "
                               f"{'--overwrite only replaces run folders; ' if overwrite else ''}choose another --out")
        elif not overwrite:
            raise AdvisorError(f"{out_dir} already holds a run: pass --resume to continue it or --overwrite to replace it")
        else:
            held = _protected(out, protect)
            if held:
                raise AdvisorError(f"--overwrite: {out_dir} holds the {held}; refusing to replace it: choose another --out")
            foreign = foreign_entries(out, marker)
            if foreign:
                raise AdvisorError(f"--overwrite: {', '.join(str(Path(out_dir) / e) for e in foreign[:3])}"
                                   f"{', ...' if len(foreign) > 3 else ''}: not created by the run in {out_dir} (not "
                                   f"recorded in its {MARKER}); move them out or choose another --out")
            folder = cls(out, "replace", marker)
        folder._lock_fd = _lock(out, out_dir)
        return folder

    def check_resumable(self) -> None:
        """A finished run has nothing to resume: resuming it would retrain from an earlier checkpoint."""
        try:
            report = json.loads((self.path / "report.json").read_text())
        except (OSError, ValueError):
            return
        if isinstance(report, dict) and report.get("status") == "completed":
            raise AdvisorError(f"--resume: the run in {self.path} is already complete ({report.get('steps')} steps); "
                               "nothing to resume: --overwrite to train it again, or choose another --out")

    def check_planned(self, names: list[str]) -> None:
        """Resume: every entry the run will write is absent or provably its own, or one line naming the first that is
        not (before anything loads, so nothing is trained only to be refused at the end)."""
        marker = self.marker or {}
        owned = owned_entries(self.path, marker)
        for name in names:
            if os.path.lexists(self.path / name) and not is_ours(self.path, name, marker, owned):
                raise AdvisorError(f"--resume: {self.path / name} is not this run's (not recorded in its {MARKER}) and the "
                                   "run would write over it: move it out of the run folder first")

    # --- the same run, or refused ---------------------------------------------------------------------------
    def compare(self, recipe_fp: dict, data_fp: dict, allow_changes: bool) -> list[str]:
        """What differs from the run being resumed; refuses any difference unless allow_changes, and with it any
        change a checkpoint cannot survive (`checkpoint_bound_changes`)."""
        changes = fingerprint_changes(self.marker or {}, recipe_fp, data_fp)
        if changes and not allow_changes:
            raise AdvisorError(f"--resume: {self.path} was started with different settings: {'; '.join(changes)}. "
                               "Resume with the run's own recipe and overrides, or pass --allow-changes "
                               "(recorded in report.json)")
        bound = checkpoint_bound_changes(self.marker or {}, recipe_fp)
        if bound:
            raise AdvisorError(f"--allow-changes: the checkpoint in {self.path} cannot survive a change of "
                               f"{', '.join(bound)} (the trainable tensors or the optimizer state would no longer "
                               "match it): resume with the run's own values, or --overwrite to train it again")
        self.changes = changes
        return changes

    # --- publishing: the point after which the folder is the new run's ------------------------------------
    def publish(self, recipe_fp: dict, data_fp: dict, files: dict[str, str], step: int = 0) -> dict:
        """Write the marker and `files` (name -> text). Fresh: in place. Replace: in a staging folder that is swapped
        in, the old run moved aside (removed by `commit`). Resume: the marker records any allowed changes and the
        manifest (an older run's marker gains one). Until `commit`, `rollback` undoes all of it."""
        from runners.io import atomic_write_text
        if self.mode == "resume":
            marker = dict(self.marker or {})
            self._undo = {name: (self.path / name).read_bytes() for name in (MARKER, *files) if (self.path / name).is_file()}
            if self.changes:
                marker["recipe"], marker["data"] = recipe_fp, data_fp
                history = list(marker.get("changes", []))
                history.append({"at_step": step, "changes": self.changes, "time": _now()})
                marker["changes"] = history
                for name, text in files.items():
                    atomic_write_text(self.path / name, text)
            if self.changes or not isinstance(marker.get("owned"), list):
                marker["owned"] = sorted(owned_entries(self.path, marker) | set(files))
                marker["version"] = MARKER_VERSION
                atomic_write_text(self.path / MARKER, json.dumps(marker, indent=2))
            self.marker, self.published = marker, True
            return marker
        marker = {"version": MARKER_VERSION, "run_id": uuid.uuid4().hex, "created": _now(), "recipe": recipe_fp,
                  "data": data_fp, "changes": [], "owned": sorted({MARKER, *files})}
        target = self.path
        if self.mode == "replace":
            target = self.path.with_name(f".{self.path.name}.new-{marker['run_id'][:8]}")
            target.mkdir()
            self._old_lock_fd, self._lock_fd = self._lock_fd, _lock(target, target)
        for name, text in files.items():
            atomic_write_text(target / name, text)
        atomic_write_text(target / MARKER, json.dumps(marker, indent=2))  # last: the folder is a run from here on
        if self.mode == "replace":
            self._aside = self.path.with_name(f".{self.path.name}.replaced-{marker['run_id'][:8]}")
            os.replace(self.path, self._aside)
            os.replace(target, self.path)
            _fsync_dir(self.path.parent)
            _unlock(self._old_lock_fd)
            self._old_lock_fd = None
        self.marker, self.published = marker, True
        return marker

    def commit(self) -> None:
        """The run has made its first step: the folder is the new run's for good. A replaced run moved aside is only
        now removed, and only when all of it is provably its own (else it is left where it is, and said so)."""
        if not self.published or self.committed:
            return
        self.committed = True
        aside, self._aside = self._aside, None
        if aside is not None:
            _remove_if_ours(aside, "the replaced run")

    def rollback(self) -> None:
        """A start that failed before its first step: leave the folder as it was found. Fresh: remove what the run
        created; replace: move the new run out and the old one back; resume: restore the marker and recipe (the
        manifest keeps what this attempt created, so the next attempt may write it again)."""
        from runners.io import atomic_write_bytes
        if not self.published or self.committed:
            return
        self.published = False
        if self.mode == "fresh":
            marker = read_marker(self.path) or {}
            owned = owned_entries(self.path, marker) if marker else set()
            for entry in sorted(self.path.iterdir()):
                if entry.name not in (MARKER, LOCK) and marker and is_ours(self.path, entry.name, marker, owned):
                    _remove(entry)
            (self.path / MARKER).unlink(missing_ok=True)
        elif self.mode == "replace" and self._aside is not None:
            failed = self.path.with_name(f".{self.path.name}.failed-{(self.marker or {}).get('run_id', 'x')[:8]}")
            os.replace(self.path, failed)
            os.replace(self._aside, self.path)
            _fsync_dir(self.path.parent)
            self._aside = None
            _remove_if_ours(failed, "the failed start")
        elif self.mode == "resume" and self._undo:
            current = read_marker(self.path) or {}
            for name, data in self._undo.items():
                if name == MARKER and current:  # the old settings, with the entries this attempt created
                    restored = json.loads(data)
                    restored["owned"] = sorted(set(restored.get("owned") or []) | set(current.get("owned") or []))
                    data = json.dumps(restored, indent=2).encode()
                atomic_write_bytes(self.path / name, data)

    def close(self) -> None:
        """Release the lock, rolling back a start that never made a step. A fresh folder whose run never started is
        removed again when this process made it."""
        self.rollback()
        if self.mode == "fresh" and not self.published:
            (self.path / LOCK).unlink(missing_ok=True)
            for made in self.created:
                try:
                    made.rmdir()  # only if empty: never removes anything else
                except OSError:
                    break
        _unlock(self._old_lock_fd)
        _unlock(self._lock_fd)
        self._lock_fd = self._old_lock_fd = None


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _remove_if_ours(folder: Path, what: str) -> None:
    """Remove a whole run folder set aside, when every entry in it is provably its run's; else leave it and say where."""
    marker = read_marker(folder)
    foreign = foreign_entries(folder, marker) if marker is not None else ["(no marker)"]
    if not foreign:
        shutil.rmtree(folder, ignore_errors=True)
        return
    import sys
    sys.stderr.write(f"advisor: kept {what} at {folder}: it holds {', '.join(foreign[:3])}, which the run did not "
                     "create; move what you need and delete it\n")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _lock(folder: Path, shown: Path) -> int:
    """An exclusive flock on folder/LOCK, kept until _unlock; another holder is named (pid and host) in the refusal."""
    fd = os.open(Path(folder) / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown pid"
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise AdvisorError(f"{shown} is in use by another Rightsize run ({holder}); wait for it to finish or "
                               "stop it, or choose another --out") from None
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
    return fd


def _unlock(fd: int | None) -> None:
    if fd is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


# --- fingerprints -----------------------------------------------------------------------------------------

def recipe_fingerprint(recipe) -> dict:
    """The resolved recipe as plain data, without the data path (the data is compared by content instead)."""
    dumped = recipe.model_dump(mode="json", exclude_none=False)
    dumped["data"] = {k: v for k, v in dumped["data"].items() if k != "path"}
    return dumped


def data_fingerprint(data, cache_root: Path) -> dict:
    """The data's content hash (cached by file identity) and where it was read from: every file behind the recipe's
    data section (training, mixed-in, eval, hub datasets in the local cache)."""
    import hashlib

    from runners.datasources import source_files
    from runners.fingerprint import data_sha256
    if not data.hub and not Path(data.path).exists():
        raise AdvisorError(f"data.path {data.path}: no such file or directory")
    files = source_files(data)
    if len(files) == 1 and not data.hub and not data.mix and not data.eval_path:
        return {"path": str(data.path), "sha256": data_sha256(Path(data.path), cache_root)}
    digest = hashlib.sha256()
    for f in files:
        digest.update(data_sha256(f, cache_root).encode())
    return {"path": str(data.path), "sha256": digest.hexdigest()}


def _flatten(tree, prefix: str = "") -> dict:
    if isinstance(tree, dict):
        out = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): tree}


def fingerprint_changes(marker: dict, recipe_fp: dict, data_fp: dict) -> list[str]:
    """One entry per changed recipe key (`train.lr 0.003 -> 0.5`) and for changed data content."""
    old, new = _flatten(marker.get("recipe") or {}), _flatten(recipe_fp)
    changes = [f"{k} {old.get(k, '(unset)')} -> {new.get(k, '(unset)')}" for k in sorted(set(old) | set(new))
               if old.get(k) != new.get(k)]
    old_data = marker.get("data") or {}
    if old_data.get("sha256") != data_fp.get("sha256"):
        changes.append(f"data {data_fp.get('path')} content changed (sha256 {str(old_data.get('sha256'))[:12]} -> "
                       f"{str(data_fp.get('sha256'))[:12]})")
    return changes


# --- what a checkpoint survives ---------------------------------------------------------------------------------
# Recipe keys (and key prefixes) a resumed checkpoint cannot survive a change of, even with --allow-changes: each
# changes the base model the adapters were fitted to, the set or shape of the trainable tensors, or the layout of the
# optimizer state, so the checkpoint no longer describes the model being trained. Everything else (lr and schedule,
# max_steps, batch sizes, seq_len, eval and logging, launch) keeps today's behaviour: allowed and recorded.
CHECKPOINT_BOUND_KEYS = {
    "model.name": "another base model",
    "model.arch": "another architecture: other tensor shapes",
    "model.random_init": "another base model (random instead of trained weights)",
    "lora.r": "the adapters' shapes (r x in, out x r)",
    "lora.targets": "which modules carry adapters: the set of trainable tensors",
    "lora.modules_to_save": "which modules train in full: the set of trainable tensors",
    "lora.use_dora": "DoRA adds a magnitude vector per adapted module",
    "lora.init": "pissa and olora rewrite the base weights at initialisation",
    "lora.dtype": "the adapters' and AdamW moments' dtype: the optimizer state layout",
    "quant": "the base weights the adapters were fitted to (4-bit or not, its data type)",
    "train.optimizer": "the optimizer's state layout (AdamW fp32 moments or 8-bit blocks)",
}


def checkpoint_bound_changes(marker: dict, recipe_fp: dict) -> list[str]:
    """Policy: the CHECKPOINT_BOUND_KEYS (as `key (why)`) that differ between the run's marker and this recipe."""
    old, new = _flatten(marker.get("recipe") or {}), _flatten(recipe_fp)
    changed = {k for k in set(old) | set(new) if old.get(k) != new.get(k)}
    return [f"{bound} ({why})" for bound, why in CHECKPOINT_BOUND_KEYS.items()
            if any(k == bound or k.startswith(bound + ".") for k in changed)]


# --- --resume-auto: one command a scheduler may start again and again ---------------------------------------------
def auto_resume_mode(out_dir: Path, recipe, cache: Path) -> str:
    """Policy of `--resume-auto`: "fresh" for a missing or empty folder, "resume" for this run (same recipe and data)
    with an intact checkpoint, "restart" for this run killed before its first checkpoint (nothing to continue from:
    started again from step 0 in its place), "complete" for this run finished; one line refusing anything else."""
    from runners.checkpoint import intact_checkpoint
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise AdvisorError(f"--out {out_dir}: is a file, expected a run folder")
    if not out.is_dir() or not [p for p in out.iterdir() if p.name != LOCK]:
        return "fresh"
    marker = read_marker(out)
    if marker is None:
        raise AdvisorError(f"--resume-auto: {out_dir} holds files Rightsize did not write (no {MARKER} marker); "
                           "choose another --out")
    changes = fingerprint_changes(marker, recipe_fingerprint(recipe), data_fingerprint(recipe.data, cache))
    if changes:
        raise AdvisorError(f"--resume-auto: {out_dir} holds a run with different settings: {'; '.join(changes[:3])}"
                           f"{'; ...' if len(changes) > 3 else ''}; choose another --out, or --resume --allow-changes")
    try:
        report = json.loads((out / "report.json").read_text())
    except (OSError, ValueError):
        report = None
    if isinstance(report, dict) and report.get("status") == "completed":
        return "complete"
    checkpoint, _ = intact_checkpoint(out)
    return "resume" if checkpoint is not None else "restart"
