"""Run folders are the user's property: Rightsize marks the folders it writes, holds one lock per folder, replaces only
its own runs (after the new run's inputs have loaded, by moving the old one aside), and resumes only the same run.

- a run folder carries `.rightsize-run` (MARKER): a run id and the fingerprints of its resolved recipe and data;
- `.rightsize-lock` (LOCK) is held with an exclusive `fcntl.flock` for the lifetime of a run or resume and names
  its holder (pid, host);
- `--overwrite` replaces a folder only if it has the marker, holds nothing but what a run writes (RUN_ENTRIES), and
  contains neither the data, the recipe nor the current directory.
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
# Everything `advisor run` writes at the top of a run folder. A folder holding anything else is not replaced.
RUN_ENTRIES = frozenset({MARKER, LOCK, "recipe.resolved.yaml", "metrics.jsonl", "report.json", "checkpoints",
                         "adapter", "merged", ".adapter.tmp", ".adapter.old", ".merged.tmp", ".merged.old",
                         "samples.jsonl", "tensorboard", "mlruns", "wandb"})  # eval samples and the trackers' logs
MARKER_VERSION = 1


def _is_run_entry(name: str) -> bool:
    """A name the runner writes: RUN_ENTRIES, or an atomic write's temporary `.NAME.XXXX.tmp` of one of them."""
    if name in RUN_ENTRIES:
        return True
    return name.startswith(".") and name.endswith(".tmp") and any(name.startswith(f".{e}.") for e in RUN_ENTRIES)


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
            foreign = [e for e in entries if not _is_run_entry(e)]
            if foreign:
                raise AdvisorError(f"--overwrite: {out_dir} holds files a run does not write ({', '.join(foreign[:3])}"
                                   f"{', ...' if len(foreign) > 3 else ''}); move them out or choose another --out")
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

    # --- the same run, or refused ---------------------------------------------------------------------------
    def compare(self, recipe_fp: dict, data_fp: dict, allow_changes: bool) -> list[str]:
        """What differs from the run being resumed; refuses any difference unless allow_changes."""
        changes = fingerprint_changes(self.marker or {}, recipe_fp, data_fp)
        if changes and not allow_changes:
            raise AdvisorError(f"--resume: {self.path} was started with different settings: {'; '.join(changes)}. "
                               "Resume with the run's own recipe and overrides, or pass --allow-changes "
                               "(recorded in report.json)")
        self.changes = changes
        return changes

    # --- publishing: the point after which the folder is the new run's ------------------------------------
    def publish(self, recipe_fp: dict, data_fp: dict, files: dict[str, str], step: int = 0) -> dict:
        """Write the marker and `files` (name -> text). Fresh: in place. Replace: in a staging folder that is swapped
        in, the old run moved aside and only then removed. Resume: the marker records any allowed changes."""
        from runners.io import atomic_write_text
        if self.mode == "resume":
            marker = dict(self.marker or {})
            if self.changes:
                marker["recipe"], marker["data"] = recipe_fp, data_fp
                history = list(marker.get("changes", []))
                history.append({"at_step": step, "changes": self.changes, "time": _now()})
                marker["changes"] = history
                for name, text in files.items():
                    atomic_write_text(self.path / name, text)
                atomic_write_text(self.path / MARKER, json.dumps(marker, indent=2))
            self.marker, self.published = marker, True
            return marker
        marker = {"version": MARKER_VERSION, "run_id": uuid.uuid4().hex, "created": _now(), "recipe": recipe_fp,
                  "data": data_fp, "changes": []}
        target = self.path
        if self.mode == "replace":
            target = self.path.with_name(f".{self.path.name}.new-{marker['run_id'][:8]}")
            target.mkdir()
            self._old_lock_fd, self._lock_fd = self._lock_fd, _lock(target, target)
        for name, text in files.items():
            atomic_write_text(target / name, text)
        atomic_write_text(target / MARKER, json.dumps(marker, indent=2))  # last: the folder is a run from here on
        if self.mode == "replace":
            aside = self.path.with_name(f".{self.path.name}.replaced-{marker['run_id'][:8]}")
            os.replace(self.path, aside)
            os.replace(target, self.path)
            _fsync_dir(self.path.parent)
            _unlock(self._old_lock_fd)
            self._old_lock_fd = None
            if read_marker(aside) is not None:  # the old run, provably ours: only now is it removed
                shutil.rmtree(aside, ignore_errors=True)
        self.marker, self.published = marker, True
        return marker

    def close(self) -> None:
        """Release the lock. A fresh folder whose run never started is removed again when this process made it."""
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
