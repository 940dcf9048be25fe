"""CUDA-only paths (marked `gpu`, skipped without a GPU): what the CPU suite cannot run."""

import pytest

from tests.conftest import run_cli
from tests.helpers import RECIPES, train_losses

pytestmark = pytest.mark.gpu
FEW = ["--set", "train.max_steps=20", "--set", "train.eval_every=0"]


def _losses(tmp_path, capsys, name, *extra):
    out = tmp_path / name
    code, _, err = run_cli(["run", RECIPES / "tiny-cpu-lora.yaml", "--out", out, *FEW, *extra], capsys)
    assert code == 0, err
    return train_losses(out)


@pytest.mark.parametrize("variant", [
    ["--set", "train.compile=true"],
    ["--set", "model.attn_implementation=flex_attention"],
    ["--set", "train.compile=true", "--set", "model.attn_implementation=flex_attention"],
], ids=["compile", "flex", "compile+flex"])
def test_cuda_variants_train_like_eager_sdpa(tmp_path, capsys, variant):
    """bf16 on CUDA: different kernels round differently, so the curves agree to bf16 precision, not bitwise."""
    eager = _losses(tmp_path, capsys, "eager")
    other = _losses(tmp_path, capsys, "other", *variant)
    assert other == pytest.approx(eager, rel=2e-2)
