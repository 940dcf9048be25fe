"""Untrusted input (YAML, JSON, flags) into msgspec Structs with one-line errors naming the field; Structs into JSON.

msgspec does the work: `msgspec.convert(data, cls, strict=False)` reads numbers written as text ("15e12") and checks
each field's type and its `msgspec.Meta` constraints; a Struct with `forbid_unknown_fields=True` refuses keys it does
not have. This module only turns msgspec's ValidationError into the path of the bad value and what is wrong with it.

Every frozen record of the advisor (inputs, catalog entries, formulas' results, the decision) is a
`msgspec.Struct(frozen=True)` rather than a `@dataclasses.dataclass(frozen=True)`, chosen by measured start-up cost:
msgspec builds a class without generating and compiling methods, and builds and replaces instances in C
(bench/record_classes.py; figures in bench/README.md). A Struct stores what it is given: constraints are checked
where input is read (here), not on every construction.
"""

import re
from pathlib import PurePath
from typing import Any, TypeVar

import msgspec

T = TypeVar("T")


class InputError(ValueError):
    """A value that breaks a field's type or constraint: `loc` is the path to it, `msg` what is wrong; `kind` is
    "unknown" for a key no field takes, "missing" for a required field not given, else "invalid"."""

    def __init__(self, loc: tuple, msg: str, kind: str = "invalid"):
        super().__init__(f"{'.'.join(map(str, loc))}: {msg}" if loc else msg)
        self.loc, self.msg, self.kind = tuple(loc), msg, kind


# msgspec's path to a bad value ($.entries[0].runs; [...] for a mapping's value) and its messages about keys
_PATH_PART = re.compile(r"\.([^.\[]+)|\[(\d+|\.\.\.)\]")
_KEY_PROBLEM = re.compile(r"Object (contains unknown|missing required) field `(.+)`")


def input_error(exc: msgspec.ValidationError, loc: tuple = ()) -> InputError:
    """msgspec's error as an InputError: its path appended to `loc` (where the converted value sits in a larger input)."""
    msg, at, path = str(exc).rpartition(" - at `")
    if not at:
        msg, path = str(exc), "$`"
    loc = (*loc, *(name or (int(index) if index.isdigit() else index) for name, index in _PATH_PART.findall(path[1:-1])))
    key = _KEY_PROBLEM.fullmatch(msg)
    if key is None:
        return InputError(loc, msg)
    unknown = key.group(1) == "contains unknown"
    return InputError((*loc, key.group(2)), "unknown key" if unknown else "missing required key",
                      "unknown" if unknown else "missing")


def convert(cls: type[T], data: Any, loc: tuple = ()) -> T:
    """A `cls` from untrusted data, in msgspec's lax mode (numbers as text, an int for a float, an integral float for
    an int); InputError naming the field when a value does not fit."""
    try:
        return msgspec.convert(data, cls, strict=False)
    except msgspec.ValidationError as exc:
        raise input_error(exc, loc) from None


def to_json(value: Any) -> Any:
    """The JSON form of a Struct, or of anything holding Structs (msgspec.to_builtins): fields in declaration order,
    paths as strings, a pydantic model as its model_dump(mode="json"), floats as they are (infinity included), and
    tuples as lists, as pydantic's model_dump(mode="json") and a JSON file read back give them (a run folder compares
    its recipe's dump with the one it stored)."""
    return _lists(msgspec.to_builtins(value, enc_hook=_json_other, str_keys=True))


def _lists(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_lists(v) for v in value]
    if isinstance(value, dict):
        return {k: _lists(v) for k, v in value.items()}
    return value


def _json_other(value: Any) -> Any:
    if isinstance(value, PurePath):
        return str(value)
    if hasattr(value, "model_dump"):  # a pydantic model held by a Struct (a published row, a run report)
        return value.model_dump(mode="json")
    raise NotImplementedError(f"no JSON form for {type(value).__name__}")
