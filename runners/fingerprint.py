"""Content fingerprints of data files: a SHA-256 of the bytes, cached by the file's identity so it is read once.

The tokenized-data cache and a run's resume check both key on what a file holds, not on its name, size and
modification time (two different files can share all three; `touch -d` restores an mtime). The cached hash is
keyed on the resolved path, size, mtime, ctime and inode: ctime changes on every write and cannot be set by
the user, so an edited file is always hashed again.
"""

import hashlib
import json
from pathlib import Path

HASH_CHUNK_BYTES = 1 << 20  # read 1 MiB at a time: constant memory for any file size


def _identity(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}|{st.st_ino}|{st.st_dev}"


def file_sha256(path: Path, cache_root: Path | None = None) -> str:
    """SHA-256 of a file's bytes; with `cache_root`, remembered under the file's identity (see the module doc)."""
    path = Path(path)
    identity = _identity(path)
    entry = None
    if cache_root is not None:
        entry = Path(cache_root) / "hashes" / (hashlib.sha256(identity.encode()).hexdigest()[:32] + ".json")
        try:
            cached = json.loads(entry.read_text())
            if cached.get("identity") == identity:
                return cached["sha256"]
        except (OSError, ValueError, AttributeError, KeyError):
            pass
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    value = digest.hexdigest()
    if entry is not None and _identity(path) == identity:  # unchanged while we read it
        from runners.io import atomic_write_text
        try:
            atomic_write_text(entry, json.dumps({"identity": identity, "sha256": value}))
        except OSError:
            pass  # a read-only cache only costs a re-hash next time
    return value


def data_files(path: Path) -> list[Path]:
    """The files a data path consists of: the file itself, or every file under a save_to_disk directory."""
    path = Path(path)
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]


def data_sha256(path: Path, cache_root: Path | None = None) -> str:
    """One content hash for a data file or directory (relative names and contents of every file)."""
    path = Path(path)
    if not path.is_dir():
        return file_sha256(path, cache_root)
    digest = hashlib.sha256()
    for f in data_files(path):
        digest.update(f"{f.relative_to(path)}\0{file_sha256(f, cache_root)}\n".encode())
    return digest.hexdigest()
