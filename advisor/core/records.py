"""Frozen dataclasses for the advisor's inputs and results, checked without pydantic, so `advisor recommend` starts fast.

pydantic (with typer >= 0.29, which coerces every option through it) was the largest part of `advisor recommend`'s
start-up: importing it and building its first model took 132 ms of the command's 310 (bench/advisor_latency.py
--breakdown, 2026-12-02 14:13 UTC, before this module). The recipe stays a pydantic schema; the catalogs, the
situation, calibration and the results are frozen dataclasses whose constraints sit on their fields:

    memory_gib: float = bounded(gt=0, description="Device memory in GiB ...")

`@record` makes a class a frozen, keyword-only dataclass whose constraints `check` enforces on construction
(`construct` skips them for values checked before); `parse(Cls, mapping, where)` reads
untrusted mappings (YAML catalogs, config.json, calibration files) strictly: unknown keys and missing fields are
refused, values are checked against the field's annotation. `to_json` is the JSON form (pydantic's
model_dump(mode="json") of the same fields). pydantic validates these dataclasses natively where a pydantic schema
embeds one (a recipe's inline `arch`, a run report's `estimate`), calling the same checks through __post_init__.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import functools
import math
import operator
import sys
import types
import typing
from pathlib import PurePath
from typing import Any, Literal, get_args, get_origin


class RecordError(ValueError):
    """A value that breaks a field's annotation or constraint: `loc` names the field (a path into nested input)."""

    def __init__(self, loc: tuple, msg: str):
        super().__init__(f"{'.'.join(map(str, loc))}: {msg}" if loc else msg)
        self.loc, self.msg = tuple(loc), msg


def bounded(default: Any = dataclasses.MISSING, *, gt: float | None = None, ge: float | None = None,
            le: float | None = None, choices: tuple | None = None, finite: bool = False, description: str = "",
            default_factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field with its constraints (> gt, >= ge, <= le, one of `choices`, finite) and its description."""
    meta = {k: v for k, v in {"gt": gt, "ge": ge, "le": le, "choices": choices, "finite": finite or None,
                              "description": description or None}.items() if v is not None}
    return dataclasses.field(default=default, default_factory=default_factory, metadata=meta)


@functools.cache
def _field_values(cls):
    """A getter of a dataclass's field values as one tuple (operator.attrgetter: C speed)."""
    names = [f.name for f in dataclasses.fields(cls)]
    getter = operator.attrgetter(*names) if names else (lambda _: ())
    return getter if len(names) != 1 else (lambda obj: (getter(obj),))


def _eq(self, other):
    if other.__class__ is not self.__class__:
        return NotImplemented
    return _field_values(self.__class__)(self) == _field_values(other.__class__)(other)


def _hash(self):
    return hash(_field_values(self.__class__)(self))


def _repr(self):
    names = [f.name for f in dataclasses.fields(self)]
    return f"{self.__class__.__qualname__}({', '.join(f'{n}={getattr(self, n)!r}' for n in names)})"


def frozen(cls=None, /, *, kw_only: bool = False):
    """@dataclass(frozen=True), with equality, hash and repr shared by every class rather than generated for each.

    The dataclass decorator compiles each method it writes: a 12-field frozen class took 1.48 ms to create with
    them and 0.84 ms without (one-off timing of 100 creations), and the ~35 classes `advisor recommend` imports took
    36-52 ms before, 21-30 ms after (5 runs each, timing dataclasses._process_class). These behave as the
    generated ones do:
    equal when the same class with equal field tuples, hashed on that tuple, shown as Class(field=value, ...)."""
    def wrap(c):
        c = dataclasses.dataclass(frozen=True, kw_only=kw_only, eq=False, repr=False)(c)
        for name, method in (("__eq__", _eq), ("__hash__", _hash), ("__repr__", _repr)):
            if name not in c.__dict__:
                setattr(c, name, method)
        return c
    return wrap if cls is None else wrap(cls)


def record(cls):
    """A frozen, keyword-only dataclass (`frozen`) whose fields' constraints (`bounded`) are checked on construction,
    before the class's own __post_init__ rule if it has one."""
    own = cls.__dict__.get("__post_init__")

    def __post_init__(self):
        check(self)
        if own is not None:
            own(self)

    cls.__post_init__ = __post_init__
    return frozen(cls, kw_only=True)


@functools.cache
def _defaults(cls) -> tuple[frozenset, tuple]:
    """A record's field names, and per field with a default its name, default and default factory."""
    fields = dataclasses.fields(cls)
    return frozenset(f.name for f in fields), tuple(
        (f.name, f.default, None if f.default_factory is dataclasses.MISSING else f.default_factory)
        for f in fields if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING)


def construct(cls, values: dict):
    """A record from values checked before, without checking them again (pydantic's model_construct): the shipped
    catalogs' prebuilt JSON, written from validated YAML and compared with it in tests/test_catalog_json.py.
    Values that do not name the record's fields exactly (the JSON of another version) raise TypeError."""
    names, defaults = _defaults(cls)
    if not names.issuperset(values) or any(n not in values for n in names - {d[0] for d in defaults}):
        raise TypeError(f"{cls.__name__}: the values do not match its fields")
    record = object.__new__(cls)
    state = record.__dict__
    for name, value, factory in defaults:
        state[name] = factory() if factory is not None else value
    state.update(values)
    return record


def description(cls, name: str) -> str:
    """A field's description, as `bounded` recorded it ("" where none was given)."""
    return next((f.metadata.get("description", "") for f in dataclasses.fields(cls) if f.name == name), "")


def default(cls, name: str) -> Any:
    """A field's default value."""
    field = next(f for f in dataclasses.fields(cls) if f.name == name)
    return field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default


def _one_of(choices) -> str:
    """pydantic's message for a value outside a Literal's choices."""
    names = [repr(c) for c in choices]
    return f"Input should be {', '.join(names[:-1])} or {names[-1]}" if len(names) > 1 else f"Input should be {names[0]}"


def _number_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _check_value(name: str, value: Any, meta: typing.Mapping) -> None:
    """One field's constraints (None passes: an optional field left unset)."""
    if value is None or not meta:
        return
    if "choices" in meta and value not in meta["choices"]:
        raise RecordError((name,), _one_of(meta["choices"]))
    bounds = [(op, meta[op]) for op in ("gt", "ge", "le") if op in meta]
    if not bounds and "finite" not in meta:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RecordError((name,), _kind_error("float"))
    if "finite" in meta and not math.isfinite(value):
        raise RecordError((name,), "Input should be a finite number")
    for op, limit in bounds:
        if op == "gt" and not value > limit:
            raise RecordError((name,), f"Input should be greater than {_number_text(limit)}")
        if op == "ge" and not value >= limit:
            raise RecordError((name,), f"Input should be greater than or equal to {_number_text(limit)}")
        if op == "le" and not value <= limit:
            raise RecordError((name,), f"Input should be less than or equal to {_number_text(limit)}")


# The simple annotations `check` enforces on construction (text as written under `from __future__ import annotations`)
_SIMPLE_KINDS = {"int": int, "float": float, "bool": bool, "str": str}


def _simple_kind(hint) -> tuple[str | None, bool]:
    """A field annotation read cheaply, without evaluating it: its one simple kind ("int", "float", "bool", "str",
    else None: a container, a record, a Literal or a union of several kinds) and whether None is allowed."""
    text = hint if isinstance(hint, str) else hint.__name__ if isinstance(hint, type) else str(hint)
    if text.startswith("typing.Optional[") and text.endswith("]"):
        text = text[len("typing.Optional["):-1] + " | None"
    arms = [a.strip() for a in text.split("|")]
    optional = "None" in arms
    kinds = [a for a in arms if a != "None"]
    return (kinds[0] if len(kinds) == 1 and kinds[0] in _SIMPLE_KINDS else None), optional


@functools.cache
def _plan(cls) -> tuple:
    """Per field: its name, simple kind (_simple_kind), whether it may be None, and its constraints."""
    return tuple((f.name, *_simple_kind(f.type), f.metadata) for f in dataclasses.fields(cls))


def _kind_error(kind: str) -> str:
    return {"int": "Input should be a valid integer", "float": "Input should be a valid number",
            "bool": "Input should be a valid boolean", "str": "Input should be a valid string"}[kind]


def check(record) -> None:
    """Enforce a record's simple annotations and the constraints `bounded` put on its fields (on construction), and
    store numbers as their annotation says, as pydantic does: an int given for a float field becomes a float, an
    integral float given for an int field an int."""
    for name, kind, optional, meta in _plan(type(record)):
        value = getattr(record, name)
        if kind is not None:
            if value is None:
                if not optional:
                    raise RecordError((name,), _kind_error(kind))
            elif kind in ("int", "float"):
                if not _is_number(value):
                    raise RecordError((name,), _kind_error(kind))
                if type(value) is not _SIMPLE_KINDS[kind]:
                    if kind == "float":
                        value = float(value)
                    elif math.isfinite(value) and value.is_integer():
                        value = int(value)
                    else:
                        raise RecordError((name,), "Input should be a valid integer, got a number with a fractional part")
                    object.__setattr__(record, name, value)
            elif not isinstance(value, _SIMPLE_KINDS[kind]):
                raise RecordError((name,), _kind_error(kind))
        if meta:
            _check_value(name, value, meta)


@functools.cache
def _hints(cls) -> dict:
    try:
        return typing.get_type_hints(cls, vars(sys.modules[cls.__module__]))
    except NameError as exc:  # an annotation imported for type checking only: a programming error, not an input one
        raise TypeError(f"records.parse({cls.__name__}): its annotations do not resolve ({exc})") from None


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _numeric_text(value, kind):
    """A number written as text (YAML reads 15e12, without a decimal point, as a string), as `kind` (an int also
    from an integral float's text, "64.0"); anything else unchanged."""
    if isinstance(value, str):
        text = value.strip().replace("_", "")
        try:
            return kind(text)
        except ValueError:
            pass
        if kind is int:
            try:
                number = float(text)
            except ValueError:
                return value
            return int(number) if math.isfinite(number) and number.is_integer() else number
    return value


# Text and numbers pydantic's lax mode reads as booleans
_TRUE, _FALSE = {"true", "yes", "on", "1", "y", "t"}, {"false", "no", "off", "0", "n", "f"}


def _lax_bool(value):
    """A boolean as pydantic reads one: a bool, 0 or 1, or true/false, yes/no, on/off as text; else unchanged."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    return value


def _exact(hint, value) -> bool:
    """Whether `value` is already exactly of the simple type `hint` (a union's arm tried first, as pydantic's smart
    mode does, so a string stays a string in `float | str`)."""
    return hint in (int, float, str, bool) and type(value) is hint


def _convert(hint, value, loc: tuple):
    """`value` as the annotation `hint` reads it, in pydantic's lax mode for numbers (an integral float is an int,
    an int is a float) and strictly otherwise; RecordError naming `loc` when it is not one."""
    origin, args = get_origin(hint), get_args(hint)
    if hint is Any or hint is object:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        arms = [a for a in args if a is not type(None)]
        exact = [a for a in arms if _exact(a, value)]
        if exact:
            return value
        errors = []
        for arm in arms:
            try:
                return _convert(arm, value, loc)
            except RecordError as exc:
                errors.append(exc)
        raise errors[-1] if len(errors) == 1 else RecordError(loc, errors[0].msg)
    if origin is Literal:
        if value in args:
            return value
        raise RecordError(loc, _one_of(args))
    if hint is type(None):
        if value is None:
            return None
        raise RecordError(loc, "Input should be None")
    if hint is bool:
        value = _lax_bool(value)
        if isinstance(value, bool):
            return value
        raise RecordError(loc, _kind_error("bool"))
    if hint is int:
        value = _numeric_text(value, int)
        if _is_number(value) and (isinstance(value, int) or (math.isfinite(value) and value.is_integer())):
            return int(value)
        raise RecordError(loc, _kind_error("int"))
    if hint is float:
        value = _numeric_text(value, float)
        if _is_number(value):
            return float(value)
        raise RecordError(loc, _kind_error("float"))
    if hint is str:
        if isinstance(value, str):
            return value
        raise RecordError(loc, _kind_error("str"))
    if origin in (list, tuple) or hint in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise RecordError(loc, f"Input should be a valid {'tuple' if (origin or hint) is tuple else 'list'}")
        if (origin or hint) is tuple and args and args[-1] is not Ellipsis:  # a fixed-length tuple: one type each
            if len(value) != len(args):
                raise RecordError(loc, f"Tuple should have {len(args)} items, not {len(value)}")
            return tuple(_convert(a, v, (*loc, i)) for i, (a, v) in enumerate(zip(args, value)))
        item = args[0] if args else Any
        out = [_convert(item, v, (*loc, i)) for i, v in enumerate(value)]
        return tuple(out) if (origin or hint) is tuple else out
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise RecordError(loc, "Input should be a valid dictionary")
        key_hint, value_hint = args if args else (Any, Any)
        return {_convert(key_hint, k, (*loc, k)): _convert(value_hint, v, (*loc, k)) for k, v in value.items()}
    if dataclasses.is_dataclass(hint):
        return value if isinstance(value, hint) else parse(hint, value, loc=loc)
    if isinstance(hint, type):
        if isinstance(value, hint):
            return value
        raise RecordError(loc, f"Input should be an instance of {hint.__name__}")
    raise TypeError(f"records: no conversion for the annotation {hint!r}")  # a programming error, not an input one


def parse(cls, data: Any, loc: tuple = (), extra: Literal["forbid", "ignore"] = "forbid"):
    """A `cls` record from an untrusted mapping (a YAML or JSON object): unknown keys (with extra="forbid") and
    missing required fields are refused, every value is checked against its annotation and constraints."""
    if not isinstance(data, dict):
        raise RecordError(loc, "Input should be a valid dictionary")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    if extra == "forbid":
        for key in data:
            if key not in fields:
                raise RecordError((*loc, key), "Extra inputs are not permitted")
    hints, values = _hints(cls), {}
    for name, field in fields.items():
        if name in data:
            values[name] = _convert(hints[name], data[name], (*loc, name))
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise RecordError((*loc, name), "Field required")
    try:
        return cls(**values)
    except RecordError as exc:
        raise RecordError((*loc, *exc.loc), exc.msg) from None
    except ValueError as exc:  # a record's own rule (its __post_init__)
        raise RecordError(loc, str(exc)) from None


def to_json(value: Any) -> Any:
    """The JSON form of a record, or of anything holding records: fields in declaration order, tuples as lists,
    paths and dates as strings (what pydantic's model_dump(mode="json") gives for the same fields)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {(k if isinstance(k, str) else str(to_json(k))): to_json(v) for k, v in value.items()}
    if isinstance(value, enum.Enum):
        return to_json(value.value)
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()
    if hasattr(value, "model_dump"):  # a pydantic model held by a record
        return value.model_dump(mode="json")
    return value
