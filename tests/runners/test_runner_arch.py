"""The runner on non-Llama architectures, end to end on a CPU: a tiny mixture of experts (LoRA and QLoRA), Gemma 3
and Phi-3, each initialised randomly; the loss falls, the adapter reloads, and the advisor's counts are the runner's."""

import json

import pytest

from advisor.plan.estimate import estimate_recipe
from advisor.formulas.memory import GIB
from advisor.plan.recipe import load_recipe
from tests.conftest import run_cli
from tests.helpers import RECIPES
from tests.runners.test_runner import _check_run


@pytest.mark.slow
@pytest.mark.parametrize("recipe_file, rel", [("tiny-cpu-moe.yaml", 1e-5), ("tiny-cpu-gemma.yaml", 1e-5),
                                               ("tiny-cpu-phi.yaml", 1e-5), ("tiny-cpu-moe-qlora.yaml", 1e-4)])
def test_tiny_architecture_trains_and_reloads(recipe_file, rel, tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = run_cli(["run", RECIPES / recipe_file, "--out", out], capsys)
    assert code == 0, err
    report = _check_run(out, recipe_file, rel=rel)  # trainable parameters equal the estimate's, loss falls, reloads
    estimate = estimate_recipe(load_recipe(RECIPES / recipe_file))
    assert report["total_params"] == estimate.total_params
    assert json.loads((out / "adapter" / "adapter_config.json").read_text())["r"] == load_recipe(RECIPES / recipe_file).lora.r


def test_moe_qlora_weights_estimate_matches_what_bitsandbytes_keeps(tmp_path):
    """QLoRA on a MoE: attention in NF4, fused experts and router unquantised, kept in bf16 by the runner (no peft fp32
    upcast): the estimate's weight bytes against the bytes of the base weights' storage as the runner prepares them."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("peft")
    from runners.model import attach_adapters, load_model
    # in bf16, as on a GPU (the CPU recipe computes in fp32, which keeps the unquantised parameters in fp32)
    recipe = load_recipe(RECIPES / "tiny-cpu-moe-qlora.yaml", ["quant.compute_dtype=bfloat16", "model.dtype=bfloat16"])
    model = attach_adapters(load_model(recipe, torch.device("cpu"), tmp_path, 0), recipe, False)
    stored = 0
    for name, p in model.named_parameters():
        if "lora_" in name:  # the adapters are counted apart (memory_gib["adapters"])
            continue
        stored += p.numel() * p.element_size()
        state = getattr(p, "quant_state", None)
        if state is not None:  # NF4 constants: absmax (8-bit when nested) plus the nested fp32 scales
            stored += state.absmax.numel() * state.absmax.element_size()
            if state.state2 is not None:
                stored += state.state2.absmax.numel() * state.state2.absmax.element_size()
    estimated = estimate_recipe(recipe).memory_gib["weights"] * GIB
    assert estimated == pytest.approx(stored, rel=0.01)
