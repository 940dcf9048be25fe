"""`advisor estimate`'s setup flags, generated from `TrainingSetup`'s fields (advisor.formulas.setup): each flag's
name, type, allowed values, bounds and help come from its field. A flag left out reads as None, so a command can
tell what was given: with a recipe, a given flag overrides the recipe's value and the estimate says so."""

from __future__ import annotations

import functools
import inspect
import typing
from typing import Annotated, Any, Literal, Optional

import typer
from msgspec import Struct, structs

from advisor.cli.options import _number
from advisor.formulas.params import resolve_lora_targets
from advisor.formulas.setup import SavedModule, TrainingSetup, canonical_dtype, one_of


class SetupFlag(Struct, frozen=True):
    """One TrainingSetup field as a command-line option."""
    field: str
    decls: str            # "--rank", or a boolean's "--on/--off" pair
    hint: Any             # the field's type
    help: str
    bounds: dict          # gt / ge / le from the field's metadata
    default: Any

    @property
    def flag(self) -> str:
        """The flag as people type it (a boolean's positive form)."""
        return self.decls.split("/")[0]

    def spelled(self, value: Any, bare: bool = False) -> str:
        """The flag as it would be typed for `value` (a boolean's on or off form); `bare`: the value alone, except
        for booleans."""
        if isinstance(value, bool) and self.hint is bool:
            on, _, off = self.decls.partition("/")
            return on if value else off
        return _shown(value) if bare else f"{self.flag} {_shown(value)}"

    @property
    def choices(self) -> tuple | None:
        return typing.get_args(self.hint) if typing.get_origin(self.hint) is Literal else None

    def parse(self, value: Any) -> Any:
        """A given value in the field's type, checked against its choices (one line naming the flag otherwise)."""
        if self.choices is not None:
            value = canonical_dtype(value) if self.field.endswith("dtype") else value
            return one_of(self.flag, value, self.choices)
        if self.field == "lora_targets":
            return resolve_lora_targets(value)
        if self.field == "modules_to_save":
            names = tuple(n.strip() for n in value.split(",") if n.strip())
            return tuple(one_of(self.flag, n, typing.get_args(SavedModule)) for n in names)
        return value


@functools.cache
def setup_flags() -> tuple[SetupFlag, ...]:
    """Every TrainingSetup field that has a flag (the architecture comes from --model or the recipe)."""
    out = []
    for f in structs.fields(TrainingSetup):
        hint, meta = typing.get_args(f.type)  # Annotated[type, Meta(description, extra={"flag": ...}, bounds)]
        decls = meta.extra.get("flag")
        if decls == "":
            continue
        if decls is None:
            decls = "--" + f.name.replace("_", "-")
            if hint is bool:
                decls += "/--no-" + f.name.replace("_", "-")
        bounds = {k: getattr(meta, k) for k in ("gt", "ge", "le") if getattr(meta, k) is not None}
        out.append(SetupFlag(f.name, decls, hint, meta.description, bounds, f.default))
    return tuple(out)


def _option(flag: SetupFlag) -> Any:
    """The typer annotation of one flag: booleans as on/off pairs, numbers through the CLI's number parser (people's
    forms such as 2k, with the field's bounds), the rest as text checked by SetupFlag.parse."""
    default = "" if "Default:" in flag.help else f" Default: {_shown(flag.default)}."
    info: dict = {"help": flag.help + default}
    base = typing.get_args(flag.hint)[0] if typing.get_origin(flag.hint) in (typing.Union, type(int | None)) else flag.hint
    if base is bool:
        return Annotated[Optional[bool], typer.Option(flag.decls, **info)]
    if base in (int, float):
        upper = flag.bounds.get("le")
        parser = _number(allow_zero="ge" in flag.bounds, upper=upper, integer=base is int)
        return Annotated[Optional[base], typer.Option(flag.decls, parser=parser, **info)]
    if flag.choices is not None:
        info["help"] = f"{flag.help} One of: {' | '.join(flag.choices)}.{default}"
    return Annotated[Optional[str], typer.Option(flag.decls, **info)]


def _shown(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(value) if value else "none"
    return "auto" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def with_setup_flags(command):
    """Add the setup flags to a command: its function receives them as `setup_flags`, a dict of the flags given
    (field name -> value in the field's type)."""
    names = {f.field for f in setup_flags()}

    @functools.wraps(command)
    def wrapper(**kwargs):
        given = {f.field: f.parse(kwargs.pop(f.field)) for f in setup_flags() if kwargs.get(f.field) is not None}
        for name in names:
            kwargs.pop(name, None)
        return command(**kwargs, setup_flags=given)

    signature = inspect.signature(command)
    own = [p for p in signature.parameters.values() if p.name != "setup_flags"]
    extra = [inspect.Parameter(f.field, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=_option(f))
             for f in setup_flags()]
    # typer reads the signature through inspect; functools' _Wrapped type does not declare __signature__
    wrapper.__signature__ = signature.replace(parameters=own + extra)  # pyright: ignore[reportAttributeAccessIssue]
    wrapper.__annotations__ = {p.name: p.annotation for p in own + extra}
    return wrapper


def recipe_values(recipe) -> dict:
    """The recipe's value of every setup field (gradient checkpointing as the recipe says it: true, false or auto)."""
    from advisor.plan.recipe_setup import recipe_setup
    setup = recipe_setup(recipe)
    values = {f.field: getattr(setup, f.field) for f in setup_flags()}
    values["gradient_checkpointing"] = recipe.train.gradient_checkpointing
    values["loss"] = "auto"  # a recipe chooses its loss through train.fused_loss
    return values


def override_lines(given: dict, recipe: dict) -> list[str]:
    """One line per given flag: the flag as given and the recipe's value it replaces."""
    by_field = {f.field: f for f in setup_flags()}
    return [f"{by_field[name].spelled(value)} " + ("(the recipe's value too)" if value == recipe[name] else
                                                  f"replaces the recipe's {by_field[name].spelled(recipe[name], bare=True)}")
            for name, value in given.items()]
