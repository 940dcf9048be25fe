"""The program torchrun starts in every process: the same run as `advisor run`, one rank of it."""

import argparse
import sys
from pathlib import Path

from advisor.plan.calibration import load_calibration
from advisor.core.errors import AdvisorError
from advisor.plan.recipe import load_recipe


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="runners.worker")
    parser.add_argument("recipe", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--allow-changes", action="store_true")
    parser.add_argument("--force", action="store_true")
    parser.add_argument("--calibration", type=Path)
    parser.add_argument("--gpu")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args(argv)
    try:
        from runners.run import run
        recipe = load_recipe(args.recipe, args.overrides)
        run(recipe, args.out, resume=args.resume, overwrite=args.overwrite, force=args.force,
            calibration=load_calibration(args.calibration) if args.calibration else None, gpu_name=args.gpu,
            recipe_path=args.recipe, allow_changes=args.allow_changes)
    except AdvisorError as exc:
        sys.stderr.write(f"advisor: error: {exc}\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
