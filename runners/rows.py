"""Data files read row by row, each row with where it came from (`line 7`, `row 3`), and checked against its format.

Every failure names the file and the line, row or byte: malformed JSON, non-UTF-8 bytes, an unterminated CSV
quote, an unreadable Parquet file, a wrong type, a null or missing field, an unknown chat role, empty messages.
"""

import csv
import json
from collections.abc import Iterator
from pathlib import Path

from advisor.core.errors import AdvisorError
from advisor.plan.recipe import DataSection

CHAT_ROLES = ("system", "user", "assistant", "tool")  # the roles chat templates render
READ_BATCH = 1000  # Parquet and save_to_disk rows decoded per batch
KINDS = {".jsonl": "jsonl", ".json": "json", ".parquet": "parquet", ".csv": "csv"}

# A row as read: where it is ("line 7"), the example (None when unreadable) and what is wrong with it, if anything.
Row = tuple[str, object, str | None]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0][:160] if text else type(exc).__name__)


def _utf8_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of a file read as UTF-8 (a leading BOM dropped); bad bytes name the byte offset."""
    offset = 0
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, 1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise AdvisorError(f"data.path {path}: not UTF-8 at byte {offset + exc.start} (line {number}): "
                                   "save the file as UTF-8") from None
            offset += len(raw)
            yield number, text.removeprefix("\ufeff") if number == 1 else text


def _json_lines(path: Path) -> Iterator[Row]:
    for number, text in _utf8_lines(path):
        if not text.strip():
            continue
        try:
            yield f"line {number}", json.loads(text), None
        except json.JSONDecodeError as exc:
            yield f"line {number}", None, f"invalid JSON ({exc.msg}, column {exc.colno})"
        except RecursionError:
            yield f"line {number}", None, "invalid JSON (nested too deeply)"


def _json_file(path: Path) -> Iterator[Row]:
    """A .json file: an array of objects, or JSON lines (what datasets' to_json writes)."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise AdvisorError(f"data.path {path}: not UTF-8 at byte {exc.start} (line {line}): save the file as UTF-8") from None
    if not text.lstrip().startswith("["):
        yield from _json_lines(path)
        return
    try:
        items = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AdvisorError(f"data.path {path} line {exc.lineno}: invalid JSON ({exc.msg}, column {exc.colno})") from None
    except RecursionError:
        raise AdvisorError(f"data.path {path}: invalid JSON (nested too deeply)") from None
    for index, item in enumerate(items):
        yield f"item {index}", item, None


def _csv_file(path: Path) -> Iterator[Row]:
    """A CSV file with a header row; every cell is a string (an empty cell is an empty string)."""
    reader = csv.reader((text for _, text in _utf8_lines(path)), strict=True)
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as exc:
        raise AdvisorError(f"data.path {path} line 1: malformed CSV header ({exc})") from None
    while True:
        start = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            why = (f"a quoted field opened on line {start} is never closed" if "end of data" in str(exc)
                   else f"malformed CSV ({exc})")
            raise AdvisorError(f"data.path {path} line {start}: {why}") from None
        if not cells:
            continue
        if len(cells) != len(header):
            yield f"line {start}", None, f"{len(cells)} cells for the header's {len(header)} columns"
        else:
            yield f"line {start}", dict(zip(header, cells)), None


def _parquet_file(path: Path) -> Iterator[Row]:
    import pyarrow.parquet as pq
    try:
        batches = pq.ParquetFile(str(path)).iter_batches(batch_size=READ_BATCH)
        index = 0
        for batch in batches:
            for example in batch.to_pylist():
                yield f"row {index}", example, None
                index += 1
    except (OSError, ValueError, TypeError) as exc:  # pyarrow's ArrowInvalid and ArrowIOError are among these
        raise AdvisorError(f"data.path {path}: not a readable Parquet file ({_first_line(exc)})") from None


def _saved_dataset(path: Path) -> Iterator[Row]:
    import datasets
    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as exc:  # noqa: BLE001 - datasets raises many types for a folder it cannot read
        raise AdvisorError(f"data.path {path}: not a dataset saved with save_to_disk ({_first_line(exc)})") from None
    if isinstance(loaded, datasets.DatasetDict):
        if "train" not in loaded:
            raise AdvisorError(f"data.path {path}: the saved DatasetDict has no 'train' split "
                               f"(splits: {', '.join(str(name) for name in loaded)})")
        loaded = loaded["train"]
    index = 0
    for batch in loaded.iter(batch_size=READ_BATCH):
        columns = list(batch)
        for i in range(len(batch[columns[0]]) if columns else 0):
            yield f"row {index}", {c: batch[c][i] for c in columns}, None
            index += 1


def iter_rows(data: DataSection) -> Iterator[Row]:
    """Every row of the recipe's data file or save_to_disk folder, in order, with where it is."""
    path = Path(data.path)
    if not path.exists():
        raise AdvisorError(f"data.path {path}: no such file or directory")
    if path.is_dir():
        yield from _saved_dataset(path)
        return
    kind = KINDS.get(path.suffix.lower())
    if kind is None:
        raise AdvisorError(f"data.path {path}: unsupported file type {path.suffix!r}; use .jsonl, .json, .parquet or .csv")
    reader = {"jsonl": _json_lines, "json": _json_file, "csv": _csv_file, "parquet": _parquet_file}[kind]
    try:
        yield from reader(path)
    except IsADirectoryError:
        raise AdvisorError(f"data.path {path}: is a directory but not a save_to_disk dataset") from None
    except PermissionError:
        raise AdvisorError(f"data.path {path}: permission denied") from None


# --- validation ---------------------------------------------------------------------------------------------

def _type_name(value) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number",
            float: "a number"}.get(type(value), type(value).__name__)


def _text_problem(example: dict, name: str, required: bool = True) -> str | None:
    if name not in example:
        return f"missing field {name!r} (fields: {', '.join(map(str, example)) or 'none'})" if required else None
    value = example[name]
    if value is None:
        return f"field {name!r} is null" if required else None
    if not isinstance(value, str):
        return f"field {name!r} is {_type_name(value)}, expected a string"
    if required and not value.strip():
        return f"field {name!r} is empty"
    return None


def _turns_problem(example: dict, name: str, role_key: str, text_key: str, roles) -> str | None:
    """A conversation field: a non-empty list of {role_key, text_key} objects with a known role and string text
    (chat: role/content; ShareGPT: from/value)."""
    pair = f"{{{role_key}, {text_key}}}"
    if name not in example:
        return f"missing field {name!r} (fields: {', '.join(map(str, example)) or 'none'})"
    turns = example[name]
    if turns is None:
        return f"field {name!r} is null"
    if not isinstance(turns, list):
        return f"field {name!r} is {_type_name(turns)}, expected a list of {pair} messages"
    if not turns:
        return f"field {name!r} is an empty list of messages"
    for i, turn in enumerate(turns):
        where = f"{name}[{i}]"
        if not isinstance(turn, dict):
            return f"{where} is {_type_name(turn)}, expected a {pair} object"
        role = turn.get(role_key)
        if role not in roles:
            return (f"{where} has no {role_key}" if role is None else
                    f"{where}.{role_key} {role!r} is not one of {', '.join(roles)}")
        text = turn.get(text_key)
        if not isinstance(text, str):
            got = "missing" if text_key not in turn else "null" if text is None else _type_name(text)
            return f"{where}.{text_key} is {got}, expected a string"
    return None


def row_problem(example, data: DataSection) -> str | None:
    """What makes one example unusable for the recipe's format, or None when it is valid."""
    if not isinstance(example, dict):
        return f"the row is {_type_name(example)}, expected an object with the data fields"
    if data.format == "text":
        return _text_problem(example, data.text_field)
    if data.format == "instruction":
        return (_text_problem(example, data.instruction_field) or _text_problem(example, data.output_field)
                or _text_problem(example, data.input_field, required=False))
    if data.format == "completion":
        return _text_problem(example, data.prompt_field) or _text_problem(example, data.completion_field)
    if data.format == "sharegpt":
        from runners.examples import SHAREGPT_ROLES
        return _turns_problem(example, data.conversations_field, "from", "value", SHAREGPT_ROLES)
    return _turns_problem(example, data.messages_field, "role", "content", CHAT_ROLES)


class BadRows:
    """Rows that fail validation: counted, the first few kept with file and line for the message."""

    KEEP = 3

    def __init__(self, path: str):
        self.path, self.count, self.first = path, 0, []

    def add(self, where: str, problem: str) -> None:
        self.count += 1
        if len(self.first) < self.KEEP:
            self.first.append(f"{where}: {problem}")

    def describe(self) -> str:
        return f"{self.path} {self.first[0]}" + (f" (and {self.count - 1} more)" if self.count > 1 else "")

    def refuse(self, total: int) -> AdvisorError:
        return AdvisorError(f"data.path {self.describe()}; {self.count} of {total} rows are invalid: fix them, or set "
                            "data.on_bad_rows: skip to train without them")
