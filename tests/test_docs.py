"""Generated documents are regenerated and diffed: they can never drift from the code and data behind them."""

import subprocess
import sys

from tests.conftest import ROOT


def test_accuracy_doc_is_current(tmp_path):
    out = tmp_path / "accuracy.md"
    subprocess.run([sys.executable, str(ROOT / "bench" / "accuracy.py"), "--doc", str(out)], check=True, capture_output=True)
    assert out.read_text() == (ROOT / "docs" / "accuracy.md").read_text(), "run: python bench/accuracy.py"


def test_recipe_reference_is_current(tmp_path):
    out = tmp_path / "recipe.md"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "recipe_reference.py"), "--out", str(out)], check=True,
                   capture_output=True)
    assert out.read_text() == (ROOT / "docs" / "recipe.md").read_text(), "run: python scripts/recipe_reference.py"
