"""Option parsers and output helpers shared by the commands: numbers as people write them, one clear line when not."""

import json
import re
import types
import typing
from pathlib import Path
from typing import Annotated, Optional

import msgspec
import typer

from advisor.core.convert import InputError, convert
from advisor.core.errors import AdvisorError
from advisor.core.numbers import ACCEPTED_FORM, parse_quantity


def _number(allow_zero: bool = False, upper: float | None = None, integer: bool = False, inclusive_upper: bool = True,
            example: str = "8"):
    """A parser for a number flag; a whole-number flag's errors offer `example` (a count such as 8), not 500k."""
    form = f"a whole number such as {example}" if integer else ACCEPTED_FORM

    def parse(text: str) -> float:
        try:
            value = parse_quantity(text, allow_zero=allow_zero, form=form)
        except AdvisorError as exc:
            raise typer.BadParameter(str(exc)) from None
        if upper is not None and (value > upper or (value == upper and not inclusive_upper)):
            raise typer.BadParameter(f"{text!r} must be at most {upper:g}; expected {form}")
        if integer:
            if value != int(value):
                raise typer.BadParameter(f"{text!r} must be a whole number")
            return int(value)
        return value
    parse.__name__ = "integer" if integer else "number"  # typer shows a parser's name as the option's metavar
    return parse


def _fraction(text: str) -> float:
    try:
        value = parse_quantity(text)
    except AdvisorError:
        raise typer.BadParameter(f"{text!r} must be a fraction in (0, 1], e.g. 0.8") from None
    if value > 1:
        raise typer.BadParameter(f"{text!r} must be a fraction in (0, 1], e.g. 0.8")
    return value


_fraction.__name__ = "fraction"  # the metavar --help shows


Count = _number()
CountOrZero = _number(allow_zero=True)
Int = _number(integer=True, upper=1e7)
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _emit_json(obj) -> None:
    typer.echo(json.dumps(obj, indent=2, default=_json_default, allow_nan=False))


def _json_default(value):
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _finite(obj):
    """JSON has no infinity: an option that cannot run reports null."""
    if isinstance(obj, float) and (obj != obj or obj in (float("inf"), float("-inf"))):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def _calibration(path: Optional[Path]):
    """The calibration `--calibration` names, else the user's if there is one (advisor.plan.calibration is imported only
    then: most users have none, and `recommend` starts without it)."""
    from advisor.catalog.load import default_calibration_path
    if path is None and not default_calibration_path().is_file():
        return None
    from advisor.plan.calibration import load_calibration
    return load_calibration(path)



def _validated(cls, /, flags: dict[str, str] | None = None, **fields):
    """A `cls` Struct built from flags' values and checked by msgspec (each field's type, Literal and constraints); a
    broken one is one line naming the flag: `flags` maps a field to the flag that sets it where the names differ (else
    --field-name). A value outside a Literal's choices is told the choices; one outside a bound, the value and the
    bound (`--tokens: 1e+30 must be at most 1e+15`)."""
    try:
        return convert(cls, fields)
    except InputError as exc:
        field = str(exc.loc[0]) if exc.loc else ""
        flag = (flags or {}).get(field) or ("--" + field.replace("_", "-") if field else "input")
        choices = _choices(cls, field) if exc.msg.startswith("Invalid enum value") else ()
        hint = f" (expected one of: {', '.join(choices)})" if choices else ""
        raise AdvisorError(f"{flag}: {_bound_message(exc.msg, fields.get(field))}{hint}", flag=flag) from None


# msgspec's message for a number outside a field's Meta bounds, e.g. "Expected `float` <= 1000000000000000.0"
_BOUND_MESSAGE = re.compile(r"Expected `(?:int|float)` (<=|<|>=|>) (\S+)")
_BOUND_WORDS = {"<=": "at most", "<": "less than", ">=": "at least", ">": "greater than"}


def _bound_message(message: str, value) -> str:
    """msgspec's message for a value outside a bound as people read it ("1e+30 must be at most 1e+15"); any other
    message as it is."""
    match = _BOUND_MESSAGE.fullmatch(message)
    if match is None or not isinstance(value, (int, float)):
        return message
    return f"{value:g} must be {_BOUND_WORDS[match.group(1)]} {float(match.group(2)):g}"


def _choices(cls, field: str) -> tuple:
    """The values a Literal field takes (within Annotated and Optional), else ()."""
    hints = {f.name: f.type for f in msgspec.structs.fields(cls)}
    pending = [hints.get(field)]
    while pending:
        hint = pending.pop()
        if typing.get_origin(hint) is typing.Literal:
            return typing.get_args(hint)
        pending += typing.get_args(hint) if typing.get_origin(hint) in (typing.Annotated, typing.Union, types.UnionType) else ()
    return ()


def _refuse_overwriting_inputs(flag: str, output: Path, inputs: dict[str, list]) -> None:
    """Refuse an output that is one of the command's own inputs (resolved paths: `./c.json`, a symlink and `c.json`
    are one file) or lies inside an input directory (a run folder's files are the run's). `inputs` maps the flag or
    argument that named them to the paths given (None and names that are not paths, such as a catalog model, pass)."""
    target = Path(output).expanduser().resolve()
    for source, paths in inputs.items():
        for given in paths:
            if given is None:
                continue
            path = Path(given).expanduser().resolve()
            if target == path:
                raise AdvisorError(f"{flag} {output} is also the {source} input: choose another path", flag=flag)
            if path.is_dir() and target.is_relative_to(path):
                raise AdvisorError(f"{flag} {output} is inside the {source} input {given} (its files are the run's): "
                                   "choose a path outside it", flag=flag)


def _calibration_inputs(path: Optional[Path]) -> dict[str, list]:
    """The calibration a command reads, as `_refuse_overwriting_inputs` takes it: --calibration, else the user's."""
    if path is not None:
        return {"--calibration": [path]}
    from advisor.catalog.load import default_calibration_path
    return {"user calibration": [default_calibration_path()]}


def _path_inputs(flag: str, *values: Optional[str]) -> dict[str, list]:
    """A flag's values that name files or directories (a config.json given as --model), for
    `_refuse_overwriting_inputs`; catalog names and sizes such as 7B are not paths and pass."""
    return {flag: [v for v in values if v is not None and Path(v).expanduser().exists()]}


def _write_text(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    except OSError as exc:
        raise AdvisorError(f"{path}: cannot write ({exc.strerror or exc})") from None


_DURATION_UNITS = {"": 1.0, "d": 1.0, "h": 1 / 24, "w": 7.0}


def _duration_days(text: str) -> float:
    """A wall-clock duration as people write it: 7d, 36h, 2w, or a number of days."""
    match = re.fullmatch(r"\s*([0-9][0-9_.,e+-]*)\s*([dhw]?)\s*", text, re.IGNORECASE | re.ASCII)
    try:
        if not match:
            raise AdvisorError(text)
        # 0d is a duration (a deadline no training meets); a record that needs more says so, naming its flag
        value = parse_quantity(match.group(1), allow_zero=True) * _DURATION_UNITS[match.group(2).lower()]
    except AdvisorError:
        raise typer.BadParameter(f"{text!r} is not a duration such as 7d, 36h or 2w") from None
    if value > 36500:
        raise typer.BadParameter(f"{text!r} is more than 100 years")
    return value


_duration_days.__name__ = "duration"  # the metavar --help shows


def _gpu_spec(text: str, default_gpu: str | None = None) -> tuple[int, str]:
    """GPUs as people write them: 8xA100, 8 x H100, or a count (then of `default_gpu`)."""
    match = re.fullmatch(r"\s*([0-9]+)\s*(?:[x\u00d7*]\s*(.+?))?\s*", text, re.IGNORECASE)
    name = (match.group(2) or default_gpu) if match else None  # the type given, else the default
    if match and int(match.group(1)) < 1:
        raise AdvisorError(f"--gpus {text!r}: the count must be 1 or more, e.g. 8xA100", flag="--gpus")
    if not match or name is None:
        raise AdvisorError(f"--gpus {text!r}: expected a count and a GPU type, e.g. 8xA100", flag="--gpus")
    from advisor.catalog.load import get_gpu
    return int(match.group(1)), get_gpu(name).name
