"""Training controls: rsLoRA, DoRA, initialisation, modules_to_save, min-lr, early stopping; each mapped to peft, the
estimator's parameter count exact against peft's, and trained on the tiny model."""

import json

import pytest
import torch

from advisor.core.errors import AdvisorError
from advisor.plan.estimate import estimate_recipe
from advisor.plan.recipe_setup import recipe_setup
from advisor.formulas.memory import trainable_tensor_numels
from advisor.plan.recipe import load_recipe
from runners.model import to_peft_config
from runners.train import lr_factor, should_stop_early
from tests.conftest import run_cli
from tests.helpers import RECIPES

TINY = RECIPES / "tiny-cpu-lora.yaml"


def test_peft_mapping():
    lora = load_recipe(TINY, ["lora.use_rslora=true", "lora.use_dora=true", "lora.init=gaussian",
                              "lora.modules_to_save=[lm_head]"]).lora
    config = to_peft_config(lora)
    assert config.use_rslora and config.use_dora and config.init_lora_weights == "gaussian"
    assert list(config.modules_to_save) == ["lm_head"]
    assert to_peft_config(load_recipe(TINY).lora).init_lora_weights is True


@pytest.mark.parametrize("sets", [["lora.use_dora=true"], ["lora.modules_to_save=[embed_tokens, lm_head]"],
                                  ["lora.use_dora=true", "lora.modules_to_save=[lm_head]"]])
def test_estimate_counts_dora_and_saved_modules_exactly(sets):
    from peft import get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM
    recipe = load_recipe(TINY, sets)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**recipe.model.resolve_arch().hf_config_dict()))
    model = get_peft_model(model, to_peft_config(recipe.lora))
    trainable = [p.numel() for p in model.parameters() if p.requires_grad]
    setup = recipe_setup(recipe)
    assert setup.trainable_params == sum(trainable) == estimate_recipe(recipe).trainable_params
    assert sorted(trainable_tensor_numels(setup)) == sorted(trainable)  # the optimizer state follows the same tensors
    assert setup.trainable_params > recipe_setup(load_recipe(TINY)).trainable_params


def test_min_lr_is_where_the_decay_ends():
    t = load_recipe(TINY, ["train.min_lr=3e-4"]).train
    assert lr_factor(149, t, 150) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + __import__("math").cos(__import__("math").pi * 139 / 140)))
    assert lr_factor(150, t, 150) == pytest.approx(0.1)
    assert lr_factor(150, load_recipe(TINY).train, 150) == pytest.approx(0.0)


def test_early_stopping_policy():
    assert not should_stop_early([2.0, 1.9, 1.95], patience=0, delta=0)
    assert should_stop_early([2.0, 1.9, 1.95, 1.92], patience=2, delta=0)
    assert not should_stop_early([2.0, 1.9, 1.95, 1.85], patience=2, delta=0)
    assert should_stop_early([2.0, 1.99], patience=1, delta=0.05)


@pytest.mark.parametrize("sets, message", [
    (["lora.init=pissa"], "rewrites the base weights"), (["train.min_lr=1"], "train.min_lr"),
    (["eval.early_stopping_patience=2", "train.eval_every=0"], "needs evals"),
    # issue 27: early stopping that can never act, and eval data that is training data, are refused
    (["eval.early_stopping_patience=2", "train.eval_every=150"], "cannot act: train.eval_every 150 is not before"),
    (["eval.early_stopping_patience=2", "data.val_fraction=0"], "needs eval data"),
    (["data.eval_path=data/tiny-instructions.jsonl"], "data.eval_path is data.path"),
    (["lora.modules_to_save=[norm]"], "lora.modules_to_save"),
])
def test_refused_with_the_fix(sets, message):
    with pytest.raises(AdvisorError, match=message):
        load_recipe(RECIPES / "tiny-cpu-qlora.yaml" if "pissa" in sets[0] else TINY, sets)


def test_controls_train_on_the_tiny_model_and_stop_early(tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = run_cli(["run", TINY, "--out", out, "--set", "train.max_steps=10", "--set", "train.eval_every=2",
                            "--set", "train.checkpoint_every=0", "--set", "lora.use_rslora=true", "--set",
                            "lora.use_dora=true", "--set", "lora.modules_to_save=[lm_head]", "--set", "train.min_lr=3e-4",
                            "--set", "eval.early_stopping_patience=1", "--set", "eval.early_stopping_delta=100"], capsys)
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    assert report["steps"] == 4 and "early stop at step 4" in err  # a 100-nat improvement is never reached
    assert report["trainable_params"] == report["estimate"]["trainable_params"]
    from peft import PeftModel

    from runners.model import load_model
    from runners.environment import cache_root
    recipe = load_recipe(out / "recipe.resolved.yaml")
    model = PeftModel.from_pretrained(load_model(recipe, torch.device("cpu"), cache_root(), 0), str(out / "adapter"))
    assert model.peft_config["default"].use_dora and sum(p.numel() for p in model.parameters()) > 0
