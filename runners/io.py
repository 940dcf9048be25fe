"""Crash-safe writes: temporary file, fsync, rename — a crash leaves the previous version whole."""

import json
import os
import shutil
import tempfile
from pathlib import Path


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically: other readers see the old file or the new one, never a torn one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; a report should be as readable as any file
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, allow_nan=False) + "\n")


def atomic_replace_dir(tmp_dir: Path, final_dir: Path) -> None:
    """Publish a fully written directory under its final name (replacing an older one of that name)."""
    for f in Path(tmp_dir).rglob("*"):
        if f.is_file():
            with f.open("rb") as handle:
                os.fsync(handle.fileno())
    old = None
    if final_dir.exists():
        old = final_dir.with_name(f".{final_dir.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final_dir, old)
    os.replace(tmp_dir, final_dir)
    _fsync_dir(final_dir.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def append_jsonl(path: Path, record: dict) -> None:
    """Append one JSON line and flush it to disk (metrics survive a crash up to the last step)."""
    with Path(path).open("a") as handle:
        handle.write(json.dumps(record, allow_nan=False) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def keep_records_until(path: Path, step: int) -> None:
    """On resume, a JSONL file keyed by step (samples.jsonl) keeps only the intact lines of the steps the checkpoint
    holds: the resumed run writes the later ones again. A missing file stays missing."""
    if not Path(path).is_file():
        return
    kept = [r for r in read_jsonl(path) if isinstance(r.get("step"), int) and r["step"] <= step]
    atomic_write_text(path, "".join(json.dumps(r, allow_nan=False) + "\n" for r in kept))


def read_jsonl(path: Path) -> list[dict]:
    """The intact lines of a JSONL file, in order: a torn line (a crash mid-write) or a damaged one is skipped,
    never the intact lines after it."""
    out = []
    if not Path(path).is_file():
        return out
    for line in Path(path).read_bytes().splitlines():
        try:
            record = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(record, dict):
            out.append(record)
    return out
