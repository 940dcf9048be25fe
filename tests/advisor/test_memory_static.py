"""Weights, adapters, gradients and optimizer state: the estimate against the bytes the runner's own model and
optimizer hold after a step (bf16 base; NF4 with double quantisation for QLoRA, constants included)."""

from pathlib import Path

import pytest
import torch

from advisor.formulas.memory import GIB, memory_per_gpu
from advisor.plan.recipe_setup import recipe_setup
from advisor.plan.recipe import load_recipe
from tests.helpers import RECIPES

SHAPE = ["model.dtype=bfloat16", "model.arch.hidden_size=256", "model.arch.intermediate_size=768",
         "model.arch.num_hidden_layers=3", "model.arch.vocab_size=2048"]


def _bytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _quant_state_bytes(param) -> int:
    state = getattr(param, "quant_state", None)
    if state is None:
        return 0
    total = _bytes(state.absmax)
    if getattr(state, "state2", None) is not None:  # double quantisation: 8-bit absmax + fp32 second level
        total += _bytes(state.state2.absmax) + (_bytes(state.offset) if state.offset is not None else 0)
    return total


@pytest.mark.parametrize("recipe_name, extra, rel", [
    ("tiny-cpu-lora.yaml", [], 0.0),
    ("tiny-cpu-lora.yaml", ["train.optimizer=adamw-8bit"], 0.01),
    ("tiny-cpu-qlora.yaml", ["quant.compute_dtype=bfloat16"], 0.001),
])
def test_static_memory_matches_the_runner(tmp_path, recipe_name, extra, rel):
    from runners.model import attach_adapters, load_model
    from runners.train import build_optimizer
    recipe = load_recipe(RECIPES / recipe_name, SHAPE + extra)
    model = attach_adapters(load_model(recipe, torch.device("cpu"), Path(tmp_path), 0), recipe, False)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = build_optimizer(params, recipe.train, torch.device("cpu"))
    ids = torch.randint(0, 2048, (1, 64))
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    measured = {
        "weights": sum(_bytes(p) + _quant_state_bytes(p) for p in model.parameters() if not p.requires_grad),
        "adapters": sum(_bytes(p) for p in params),
        "gradients": sum(_bytes(p.grad) for p in params),
        # distinct storages: 8-bit AdamW's quantisation maps (qmap1/2) are shared by every tensor's state
        "optimizer": sum({v.untyped_storage().data_ptr(): _bytes(v) for s in optimizer.state.values() for v in s.values()
                          if torch.is_tensor(v) and v.numel() > 1}.values()),
    }
    estimate = memory_per_gpu(recipe_setup(recipe))
    for term, value in measured.items():
        assert getattr(estimate, term) * GIB == pytest.approx(value, rel=rel, abs=1), term
