"""Write docs/recipe.md from the recipe schema itself: each field's type, default and description.

Usage: python scripts/recipe_reference.py [--out docs/recipe.md]   (a test regenerates it and diffs)
"""

import argparse
import sys
import typing
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pydantic import BaseModel  # noqa: E402
from pydantic_core import PydanticUndefined  # noqa: E402

from advisor.plan.recipe import (  # noqa: E402
    DataSection, EvalSection, LaunchSection, LoraSection, ModelSection, PlanSection, QuantSection, Recipe,
    TrainSection,
)
from advisor.plan.recipe_sections import DataSource  # noqa: E402


def type_name(annotation) -> str:
    if typing.get_origin(annotation) is typing.Annotated:  # a type with its validator (the inline ModelArch)
        return type_name(typing.get_args(annotation)[0])
    if typing.get_origin(annotation) is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in typing.get_args(annotation))
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is tuple and len(args) == 2 and args[1] is Ellipsis:
        return f"list of {type_name(args[0])}"
    if args:
        return " or ".join(type_name(a) for a in args if a is not type(None)) + (" (optional)" if type(None) in args else "")
    return getattr(annotation, "__name__", str(annotation))


def section(title: str, model: type[BaseModel]) -> list[str]:
    lines = [f"## `{title}`", "", (model.__doc__ or "").strip(), "", "| key | type | default | meaning |", "|---|---|---|---|"]
    for name, field in model.model_fields.items():
        default = "required" if field.default is PydanticUndefined and field.default_factory is None else f"`{field.default!r}`"
        if isinstance(field.default, BaseModel):
            default = "(section defaults)"
        lines.append(f"| `{name}` | {type_name(field.annotation)} | {default} | {field.description or ''} |")
    return lines + [""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "recipe.md")
    args = parser.parse_args()
    lines = ["# Recipe reference", "", "Generated from `advisor/plan/recipe.py` by `python scripts/recipe_reference.py`; the field "
             "descriptions there are the only copy. Unknown keys are rejected (with the nearest valid key suggested); "
             "`advisor validate RECIPE` checks a recipe without running it.", ""]
    for title, model in [("recipe", Recipe), ("model", ModelSection), ("lora", LoraSection), ("quant", QuantSection),
                         ("data", DataSection), ("data.mix[]", DataSource), ("train", TrainSection), ("eval", EvalSection), ("launch", LaunchSection),
                         ("plan", PlanSection)]:
        lines += section(title, model)
    args.out.write_text("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
