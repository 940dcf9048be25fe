"""Where rows come from: the training file, the mixed-in ones and the eval file (each a Source named by its recipe
key), hub datasets from the local cache (offline), which rows a weight uses, and every file read row by row, each
row with where it is (`line 7`, `row 3`).

Every read failure is one line naming the key, the file and the line, row or byte: malformed JSON, non-UTF-8 bytes,
an unterminated CSV quote, an unreadable Parquet or Arrow file, an empty file (runners.rows).
"""

import csv
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from advisor.core.errors import AdvisorError
from advisor.plan.recipe import DataSection

DATA_SUFFIXES = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv", ".arrow": "arrow"}
READ_BATCH = 1000  # Parquet and save_to_disk rows decoded per batch
KINDS = {".jsonl": "jsonl", ".json": "json", ".parquet": "parquet", ".csv": "csv", ".arrow": "arrow"}


def hub_snapshot(dataset_id: str, key: str = "data.path") -> Path:
    """The folder of a hub dataset in the local Hugging Face cache (HF_HUB_CACHE), without touching the network."""
    from huggingface_hub import snapshot_download
    try:
        return Path(snapshot_download(dataset_id, repo_type="dataset", local_files_only=True))
    except Exception as exc:  # huggingface_hub raises several types for "not cached"
        raise AdvisorError(f"{key} {dataset_id} (hub: true) is not in the local hub cache ({type(exc).__name__}): "
                           f"download it once with `hf download --repo-type dataset {dataset_id}`, or point {key} "
                           "at a local copy") from None


def split_files(folder: Path, split: str) -> list[Path]:
    """The data files of one split in a dataset repository: files or folders named for the split, else all of them."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in DATA_SUFFIXES)
    named = [p for p in files if split in p.relative_to(folder).as_posix().replace("-", "/").replace("_", "/").split("/")
             or p.stem.startswith(split)]
    return named or files


def hub_paths(dataset_id: str, split: str, key: str = "data.path") -> list[Path]:
    """What to read for a hub dataset's split from the local cache: its save_to_disk folder, or its data files of
    one type (iter_source_rows reads either, naming the file and line of every problem)."""
    folder = hub_snapshot(dataset_id, key)
    if (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file():
        return [folder]
    files = split_files(folder, split)
    if not files:
        raise AdvisorError(f"{key} {dataset_id} (hub: true): no data files ({', '.join(DATA_SUFFIXES)}) in {folder}")
    kinds = {DATA_SUFFIXES[f.suffix.lower()] for f in files}
    if len(kinds) > 1:
        raise AdvisorError(f"{key} {dataset_id} (hub: true): split {split!r} mixes file types {sorted(kinds)}")
    return files


def pick_split(loaded, split: str, where: str):
    """One split of a DatasetDict (a Dataset is its own split)."""
    import datasets
    if not isinstance(loaded, datasets.DatasetDict):
        return loaded
    if split not in loaded:
        raise AdvisorError(f"{where}: no split {split!r} (splits: {', '.join(str(name) for name in loaded)}); set data.split")
    return loaded[split]


@dataclass(frozen=True)
class Source:
    """One place rows come from, named by its recipe key: the training file, a mixed-in one, or the eval file."""

    key: str            # data.path, data.mix[0].path or data.eval_path: the recipe key every message names
    path: str           # a local file or folder, or a hub dataset id
    hub: bool
    split: str
    weight: float       # times each valid row is used per epoch (the eval file: 1)
    is_eval: bool = False

    @property
    def label(self) -> str:
        """How messages name it: the key and the file (`data.mix[0].path /data/b.jsonl`)."""
        return f"{self.key} {self.path}"


def data_sources(data: DataSection) -> list[Source]:
    """Every source of the data section, training sources first (data.path, then data.mix in order), then the eval
    file: each is read (iter_source_rows) and validated (runners.rows) the same way."""
    sources = [Source("data.path", data.path, data.hub, data.split, data.weight)]
    sources += [Source(f"data.mix[{i}].path", s.path, s.hub, s.split, s.weight) for i, s in enumerate(data.mix)]
    if data.eval_path:
        sources.append(Source("data.eval_path", data.eval_path, False, data.split, 1.0, is_eval=True))
    return sources


def weighted_indices(n: int, weight: float, seed: int) -> list[int]:
    """Positions of `n` rows used `weight` times: whole copies in order, then a seeded random share (sorted) of
    floor(n x the fraction) rows."""
    whole, fraction = int(weight), weight - int(weight)
    indices = [i for _ in range(whole) for i in range(n)]
    if fraction > 0:
        import random
        indices += sorted(random.Random(seed).sample(range(n), math.floor(n * fraction)))
    return indices


def source_files(data: DataSection) -> list[Path]:
    """Every local file behind the recipe's data (training, mixed-in, eval; hub datasets in the cache), for the
    tokenized-data fingerprint."""
    roots = [hub_snapshot(data.path) if data.hub else Path(data.path)]
    roots += [hub_snapshot(s.path) if s.hub else Path(s.path) for s in data.mix]
    roots += [Path(data.eval_path)] if data.eval_path else []
    files = []
    for root in roots:
        files += sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
    return files


# --- reading rows: every source, row by row, each with where it is ---------------------------------------------

class RowProblem(NamedTuple):
    """Why a row is left out: `reason`, a short category the per-source summary counts ("null field"), and
    `detail`, the message naming the field ("field 'text' is null")."""

    reason: str
    detail: str

    def __str__(self) -> str:
        return self.detail


# A row as read: where it is ("line 7"), the example (None when unreadable) and what is wrong with it, if anything.
Row = tuple[str, object, RowProblem | None]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0][:160] if text else type(exc).__name__)


def _utf8_lines(path: Path, label: str) -> Iterator[tuple[int, str]]:
    """(line number, text) of a file read as UTF-8 (a leading BOM dropped); bad bytes name the byte offset. Each
    line is held once, as the decoded text (the bytes are dropped as soon as they are decoded)."""
    offset = 0
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, 1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise AdvisorError(f"{label}: not UTF-8 at byte {offset + exc.start} (line {number}): "
                                   "save the file as UTF-8") from None
            offset += len(raw)
            del raw
            yield number, text.removeprefix("\ufeff") if number == 1 else text


def _json_lines(path: Path, label: str) -> Iterator[Row]:
    for number, text in _utf8_lines(path, label):
        if not text.strip():
            continue
        try:
            yield f"line {number}", json.loads(text), None
        except json.JSONDecodeError as exc:
            yield f"line {number}", None, RowProblem("invalid JSON", f"invalid JSON ({exc.msg}, column {exc.colno})")
        except RecursionError:
            yield f"line {number}", None, RowProblem("invalid JSON", "invalid JSON (nested too deeply)")


def _json_file(path: Path, label: str) -> Iterator[Row]:
    """A .json file: an array of objects, or JSON lines (what datasets' to_json writes)."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise AdvisorError(f"{label}: not UTF-8 at byte {exc.start} (line {line}): save the file as UTF-8") from None
    if not text.lstrip().startswith("["):
        del raw, text
        yield from _json_lines(path, label)
        return
    try:
        items = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AdvisorError(f"{label} line {exc.lineno}: invalid JSON ({exc.msg}, column {exc.colno})") from None
    except RecursionError:
        raise AdvisorError(f"{label}: invalid JSON (nested too deeply)") from None
    for index, item in enumerate(items):
        yield f"item {index}", item, None


def _csv_file(path: Path, label: str) -> Iterator[Row]:
    """A CSV file with a header row; every cell is a string (an empty cell is an empty string)."""
    reader = csv.reader((text for _, text in _utf8_lines(path, label)), strict=True)
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as exc:
        raise AdvisorError(f"{label} line 1: malformed CSV header ({exc})") from None
    while True:
        start = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            why = (f"a quoted field opened on line {start} is never closed" if "end of data" in str(exc)
                   else f"malformed CSV ({exc})")
            raise AdvisorError(f"{label} line {start}: {why}") from None
        if not cells:
            continue
        if len(cells) != len(header):
            yield f"line {start}", None, RowProblem("wrong cell count",
                                                    f"{len(cells)} cells for the header's {len(header)} columns")
        else:
            yield f"line {start}", dict(zip(header, cells)), None


def _parquet_file(path: Path, label: str) -> Iterator[Row]:
    import pyarrow.parquet as pq
    try:
        batches = pq.ParquetFile(str(path)).iter_batches(batch_size=READ_BATCH)
        index = 0
        for batch in batches:
            for example in batch.to_pylist():
                yield f"row {index}", example, None
                index += 1
    except (OSError, ValueError, TypeError) as exc:  # pyarrow's ArrowInvalid and ArrowIOError are among these
        raise AdvisorError(f"{label}: not a readable Parquet file ({_first_line(exc)})") from None


def _arrow_file(path: Path, label: str) -> Iterator[Row]:
    """An Arrow file as `datasets` caches and hub repositories hold it (IPC stream, or the IPC file format)."""
    import pyarrow as pa
    try:
        with pa.memory_map(str(path)) as source:
            try:
                batches = pa.ipc.open_stream(source)
            except pa.ArrowInvalid:
                batches = pa.ipc.open_file(source)
                batches = (batches.get_batch(i) for i in range(batches.num_record_batches))
            index = 0
            for batch in batches:
                for example in batch.to_pylist():
                    yield f"row {index}", example, None
                    index += 1
    except (OSError, ValueError, TypeError) as exc:
        raise AdvisorError(f"{label}: not a readable Arrow file ({_first_line(exc)})") from None


def _saved_dataset(path: Path, label: str, split: str) -> Iterator[Row]:
    import datasets
    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as exc:  # noqa: BLE001 - datasets raises many types for a folder it cannot read
        raise AdvisorError(f"{label}: not a dataset saved with save_to_disk ({_first_line(exc)})") from None
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise AdvisorError(f"{label}: the saved DatasetDict has no {split!r} split "
                               f"(splits: {', '.join(str(name) for name in loaded)}); set data.split")
        loaded = loaded[split]
    index = 0
    for batch in loaded.iter(batch_size=READ_BATCH):
        columns = list(batch)
        for i in range(len(batch[columns[0]]) if columns else 0):
            yield f"row {index}", {c: batch[c][i] for c in columns}, None
            index += 1


def _path_rows(path: Path, label: str, split: str) -> Iterator[Row]:
    """Every row of one local file or save_to_disk folder, in order, with where it is."""
    if not path.exists():
        raise AdvisorError(f"{label}: no such file or directory")
    if path.is_dir():
        yield from _saved_dataset(path, label, split)
        return
    kind = KINDS.get(path.suffix.lower())
    if kind is None:
        raise AdvisorError(f"{label}: unsupported file type {path.suffix!r}; use .jsonl, .json, .parquet or .csv")
    reader = {"jsonl": _json_lines, "json": _json_file, "csv": _csv_file, "parquet": _parquet_file,
              "arrow": _arrow_file}[kind]
    try:
        yield from reader(path, label)
    except IsADirectoryError:
        raise AdvisorError(f"{label}: is a directory but not a save_to_disk dataset") from None
    except PermissionError:
        raise AdvisorError(f"{label}: permission denied") from None


def iter_source_rows(source: Source) -> Iterator[Row]:
    """Every row of one source, in order, with where it is: `line 7` of a local file, `train-00000-of-00001.jsonl
    line 7` of a hub dataset's file (`row 3` in Parquet, Arrow and save_to_disk data)."""
    if not source.hub:
        yield from _path_rows(Path(source.path), source.label, source.split)
        return
    paths = hub_paths(source.path, source.split, source.key)
    for path in paths:
        name = path.name if len(paths) > 1 or path.is_file() else ""
        for where, example, problem in _path_rows(path, f"{source.label} {name}".rstrip(), source.split):
            yield (f"{name} {where}" if name else where), example, problem
