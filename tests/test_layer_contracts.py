"""The layers as import-linter checks them (pyproject.toml): the contracts hold, and a deliberate upward import in a
scratch copy of the tree breaks them, so the check is known to bite."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint_imports(tree: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=tree, env=env, capture_output=True, text=True,
                          timeout=300)


def test_the_layer_contracts_hold():
    result = _lint_imports(ROOT)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "BROKEN" not in result.stdout and "KEPT" in result.stdout


def test_an_upward_import_breaks_the_layer_contract(tmp_path):
    for name in ("advisor", "runners", "bench"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__", "results"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    formula = tmp_path / "advisor" / "formulas" / "flops.py"
    formula.write_text(formula.read_text() + "\n\ndef _upward():\n    from advisor.decide import costing  # a formula reaching up\n")
    result = _lint_imports(tmp_path)
    assert result.returncode != 0
    assert "advisor.formulas is not allowed to import advisor.decide" in result.stdout
