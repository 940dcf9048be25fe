"""Architectures the advisor does not describe, counted through transformers' model code when asked for
(advisor.catalog.counted): totals, active parameters and LoRA counts against the libraries, and refusals by name."""

import json
import sys

import pytest

from advisor.catalog import load as catalog
from advisor.catalog.counted import COUNT_ENV, GENERIC_NOTE
from advisor.core.errors import AdvisorError
from advisor.formulas.params import lora_trainable_params, param_counts

SHAPE = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
             vocab_size=300, max_position_embeddings=256)
# model_types outside SUPPORTED_MODEL_TYPES, dense and MoE, with their families' own config names for the experts
CASES = {
    "gpt_neox": dict(num_key_value_heads=4),
    "falcon": dict(num_key_value_heads=None, new_decoder_architecture=True, num_kv_heads=2),
    "starcoder2": {},
    "cohere": {},
    "granitemoe": dict(num_local_experts=6, num_experts_per_tok=2),
    "granitemoeshared": dict(num_local_experts=6, num_experts_per_tok=2, shared_intermediate_size=48),
    "olmoe": dict(num_experts=6, num_experts_per_tok=2),
    "ernie4_5_moe": dict(moe_num_experts=6, moe_k=2, moe_intermediate_size=32),
}


def _config(tmp_path, model_type: str) -> str:
    fields = {k: v for k, v in {**SHAPE, **CASES[model_type]}.items() if v is not None}
    path = tmp_path / f"{model_type}.json"
    path.write_text(json.dumps({"model_type": model_type, **fields}))
    return str(path)


def _meta_model(path: str):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    raw = json.loads(open(path).read())
    config = transformers.AutoConfig.for_model(raw.pop("model_type"), **raw)
    with torch.device("meta"):
        return config, transformers.AutoModelForCausalLM.from_config(config)


@pytest.mark.parametrize("model_type", list(CASES))
def test_counted_totals_and_active_match_the_built_model(model_type, tmp_path, monkeypatch):
    monkeypatch.setenv(COUNT_ENV, "1")
    path = _config(tmp_path, model_type)
    arch = catalog.get_model(path)
    config, model = _meta_model(path)
    params = dict(model.named_parameters())
    counts = param_counts(arch)
    assert counts.total == sum(p.numel() for p in params.values())
    experts = sum(p.numel() for n, p in params.items() if ".experts." in n)
    assert counts.experts == experts
    if experts:  # a token skips (E - k) / E of every routed expert's parameters
        per_layer = [n for n in params if ".experts." in n]
        assert per_layer
        e = next(getattr(config, k) for k in ("num_local_experts", "num_experts", "moe_num_experts")
                 if getattr(config, k, None))
        k = next(getattr(config, k) for k in ("num_experts_per_tok", "moe_k") if getattr(config, k, None))
        assert counts.active == counts.total - experts * (e - k) // e
    else:
        assert counts.active == counts.total


@pytest.mark.parametrize("model_type", list(CASES))
def test_counted_lora_matches_peft(model_type, tmp_path, monkeypatch):
    """Dense: every nn.Linear as peft counts it. MoE: the expert layout checked against peft when counting (olmoe and
    ernie4_5_moe are reached through peft's conversion of gate/up/down_proj onto the fused experts; granitemoe not)."""
    peft = pytest.importorskip("peft")
    monkeypatch.setenv(COUNT_ENV, "1")
    path = _config(tmp_path, model_type)
    arch = catalog.get_model(path)
    for rank, targets in [(4, "all-linear"), (2, "q_proj,v_proj"), (3, "all-linear")]:
        _, model = _meta_model(path)
        modules = "all-linear" if targets == "all-linear" else targets.split(",")
        try:
            peft_model = peft.get_peft_model(model, peft.LoraConfig(r=rank, lora_alpha=8, target_modules=modules))
        except ValueError:  # peft finds none of the targets (gpt_neox, falcon: fused query_key_value): we refuse too
            with pytest.raises(AdvisorError, match="none of the LoRA targets"):
                lora_trainable_params(arch, rank, targets)
            continue
        trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
        assert trainable == lora_trainable_params(arch, rank, targets), targets


def test_counted_moe_without_peft_refuses_lora(tmp_path, monkeypatch):
    monkeypatch.setenv(COUNT_ENV, "1")
    monkeypatch.setitem(sys.modules, "peft", None)
    arch = catalog.get_model(_config(tmp_path, "olmoe"))
    assert param_counts(arch).total > param_counts(arch).active  # counts still given
    with pytest.raises(AdvisorError, match="peft's treatment of them could not be checked"):
        lora_trainable_params(arch, 4, "all-linear")


def test_estimate_says_the_architecture_was_counted(tmp_path, monkeypatch):
    from advisor.formulas.setup import TrainingSetup
    from advisor.plan.estimate import estimate_training
    monkeypatch.setenv(COUNT_ENV, "1")
    arch = catalog.get_model(_config(tmp_path, "granitemoe"))
    result = estimate_training(TrainingSetup(arch=arch, method="lora"), catalog.get_gpu("A100-80GB"), tokens=1e6)
    assert GENERIC_NOTE in (result.extrapolating or [])
    assert result.total_params > result.active_params


def test_unknown_architecture_refused_by_name_unless_asked(tmp_path, monkeypatch):
    monkeypatch.delenv(COUNT_ENV, raising=False)
    path = _config(tmp_path, "gpt_neox")
    with pytest.raises(AdvisorError) as err:
        catalog.get_model(path)
    message = str(err.value)
    assert "'gpt_neox' is not supported" in message and COUNT_ENV in message and "\n" not in message


def test_asked_without_transformers_or_for_a_type_transformers_lacks(tmp_path, monkeypatch):
    monkeypatch.setenv(COUNT_ENV, "1")
    monkeypatch.setitem(sys.modules, "transformers", None)  # import fails as if not installed
    with pytest.raises(AdvisorError, match="needs transformers and torch installed"):
        catalog.get_model(_config(tmp_path, "cohere"))
    monkeypatch.delitem(sys.modules, "transformers")
    odd = tmp_path / "odd.json"
    odd.write_text(json.dumps({"model_type": "no_such_family", **SHAPE}))
    with pytest.raises(AdvisorError) as err:
        catalog.get_model(str(odd))
    assert "'no_such_family' is unknown to transformers" in str(err.value) and "\n" not in str(err.value)
