"""Estimators against the papers' formulas and against what transformers, peft and bitsandbytes really build."""

import pytest

from advisor.catalog import load as catalog
from advisor.catalog.types import ModelArch
from advisor.core.errors import AdvisorError
from advisor.formulas.flops import flops_per_token, gpu_hours
from advisor.formulas.memory import memory_per_gpu, nf4_bytes_per_param, weight_bytes
from advisor.formulas.params import LINEAR_MODULES, lora_trainable_params, param_counts, resolve_lora_targets
from advisor.plan.launch_plan import gpus_needed
from advisor.formulas.setup import TrainingSetup
from tests.conftest import meta_causal_lm

CATALOG_MODELS = [m.name for m in catalog.entries("models") if m.published_params]  # exact published counts


@pytest.mark.parametrize("name", CATALOG_MODELS)
def test_param_count_matches_published(name):
    arch = catalog.get_model(name)
    assert param_counts(arch).total == arch.published_params


def test_lora_params_for_llama_8b():
    arch = catalog.get_model("Llama-3.1-8B")
    # q: 16*(4096+4096), k,v: 16*(4096+1024), o: 16*(4096+4096), gate/up: 16*(4096+14336), down: same; x 32 layers
    assert lora_trainable_params(arch, 16, "all-linear") == 41_943_040
    assert lora_trainable_params(arch, 8, "q_proj,v_proj") == 32 * 8 * ((4096 + 4096) + (4096 + 1024))


def test_targets():
    assert resolve_lora_targets("all-linear") == LINEAR_MODULES
    assert resolve_lora_targets(["q_proj", "v_proj", "q_proj"]) == ("q_proj", "v_proj")
    with pytest.raises(AdvisorError, match="unknown LoRA target"):
        resolve_lora_targets("q_proj,lm_head")


def test_full_finetune_flops_are_palm_6n_plus_12lhqt():
    arch = catalog.get_model("Llama-3.1-8B")
    counts = param_counts(arch)
    n_matmul = counts.linear_weights + arch.vocab_size * arch.hidden_size
    f = flops_per_token(arch, 2048, "full")
    L, H, Q, T = 32, 32, 128, 2048
    assert f.model == pytest.approx(6 * n_matmul + 12 * L * H * Q * T)
    assert f.recompute == 0 and f.total == f.model


def test_lora_flops_skip_weight_gradients_and_checkpointing_adds_a_forward():
    arch = catalog.get_model("Llama-3.1-8B")
    lora = lora_trainable_params(arch, 16, "all-linear")
    full = flops_per_token(arch, 2048, "full")
    f = flops_per_token(arch, 2048, "lora", lora)
    assert f.model < full.model
    # LoRA skips the weight gradients of the base: 2 N_mm fewer than full (N_mm = forward minus attention).
    assert f.model == pytest.approx(full.model - (full.forward - 4 * 32 * 2048 * 4096) + 6 * lora, rel=1e-9)
    ckpt = flops_per_token(arch, 2048, "lora", lora, gradient_checkpointing=True)
    assert ckpt.model == f.model and ckpt.recompute > 0
    assert flops_per_token(arch, 2048, "qlora", lora).model == f.model


def test_nf4_storage_per_qlora_paper():
    # Dettmers et al. 2023 §3: constants cost 32/64 = 0.5 bit/param, or 8/64 + 32/(64*256) = 0.127 with DQ.
    assert nf4_bytes_per_param(False) * 8 == pytest.approx(4.5)
    assert nf4_bytes_per_param(True) * 8 == pytest.approx(4 + 0.127, abs=1e-3)


def test_qlora_weights_keep_embeddings_and_head_unquantised():
    arch = catalog.get_model("Llama-3.1-8B")
    counts = param_counts(arch)
    rest = counts.total - counts.linear_weights
    # the runner keeps them in bf16; peft's prepare_model_for_kbit_training would upcast them to fp32
    assert weight_bytes(arch, "qlora") == pytest.approx(counts.linear_weights * nf4_bytes_per_param(True) + 2 * rest)
    assert weight_bytes(arch, "qlora", embeddings_dtype="float32") == pytest.approx(
        counts.linear_weights * nf4_bytes_per_param(True) + 4 * rest)
    assert weight_bytes(arch, "lora") == 2 * counts.total


def test_memory_sharding_and_fit():
    arch = catalog.get_model("Llama-3.1-70B")
    one = memory_per_gpu(TrainingSetup(arch=arch, method="full", gpus=1))
    ddp = memory_per_gpu(TrainingSetup(arch=arch, method="full", gpus=8, sharding="ddp"))
    fsdp = memory_per_gpu(TrainingSetup(arch=arch, method="full", gpus=8, sharding="fsdp"))
    assert ddp.weights == one.weights
    assert fsdp.weights == pytest.approx(one.weights / 8)
    assert fsdp.optimizer == pytest.approx(one.optimizer / 8)
    assert fsdp.activations == one.activations
    assert one.total == pytest.approx(sum([one.weights, one.adapters, one.gradients, one.optimizer, one.activations,
                                           one.logits, one.overhead]))
    h100 = catalog.get_gpu("H100-SXM")
    assert gpus_needed(TrainingSetup(arch=arch, method="qlora"), h100) == 1
    assert gpus_needed(TrainingSetup(arch=arch, method="full"), h100) >= 16


def test_checkpointing_and_flash_reduce_activations():
    arch = catalog.get_model("Llama-3.1-8B")
    base = TrainingSetup(arch=arch, seq_len=4096, gradient_checkpointing=False)
    ckpt = TrainingSetup(arch=arch, seq_len=4096, gradient_checkpointing=True)
    eager = TrainingSetup(arch=arch, seq_len=4096, gradient_checkpointing=False, flash_attention=False)
    assert memory_per_gpu(ckpt).activations < memory_per_gpu(base).activations / 5
    assert memory_per_gpu(eager).activations > memory_per_gpu(base).activations


def test_gpu_hours_arithmetic():
    # 1e18 FLOPs at 312 TFLOP/s x 0.5 efficiency = 6410 s = 1.78 h
    assert gpu_hours(1e18, 312e12, 0.5) == pytest.approx(1e18 / 156e12 / 3600)
    with pytest.raises(AdvisorError):
        gpu_hours(1e18, 312e12, 0)


def test_local_config_json(tmp_path):
    arch = catalog.get_model("Qwen2.5-0.5B")
    cfg = tmp_path / "config.json"
    import json
    cfg.write_text(json.dumps({**arch.hf_config_dict(), "architectures": ["Qwen2ForCausalLM"], "torch_dtype": "bfloat16"}))
    loaded = catalog.get_model(str(tmp_path))
    assert param_counts(loaded).total == arch.published_params
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(AdvisorError, match="JSON object"):
        catalog.get_model(str(tmp_path / "bad.json"))
    with pytest.raises(AdvisorError, match="no such file"):
        catalog.get_model(str(tmp_path / "missing.json"))


def test_user_catalog_overrides(tmp_path, monkeypatch):
    (tmp_path / "gpus.yaml").write_text(
        "- {name: H100-SXM, memory_gib: 74.5, peak_tflops_bf16: 989, memory_bandwidth_gbs: 3350, "
        "price_usd_per_hour: 1.5, source: our contract, date: '2026-01'}\n")
    monkeypatch.setenv("RIGHTSIZE_CONFIG_DIR", str(tmp_path))
    catalog.load.cache_clear()
    assert catalog.get_gpu("H100-SXM").price_usd_per_hour == 1.5
    assert catalog.get_gpu("h100").price_usd_per_hour == 1.5


def test_unknown_names_suggest():
    with pytest.raises(AdvisorError, match="did you mean Llama-3.1-8B"):
        catalog.get_model("Llama-3.1-8b-instruct-x")


# --- against the libraries themselves (meta device: no memory, no download) ---------------------------


@pytest.mark.parametrize("name", ["Llama-2-7B", "Llama-3.1-8B", "Llama-3.2-1B", "Llama-3.2-3B", "Mistral-7B",
                                  "Qwen2.5-0.5B", "Qwen2.5-7B", "Llama-3.1-70B", "Llama-3.1-405B"])
def test_param_count_matches_transformers(name):
    arch = catalog.get_model(name)
    model = meta_causal_lm(arch)
    assert sum(p.numel() for p in model.parameters()) == param_counts(arch).total


TINY_VARIANTS = [
    dict(model_type="llama", hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
         num_key_value_heads=2, vocab_size=300, tie_word_embeddings=False),
    dict(model_type="llama", hidden_size=48, intermediate_size=96, num_hidden_layers=3, num_attention_heads=6,
         num_key_value_heads=6, head_dim=16, vocab_size=257, tie_word_embeddings=True, attention_bias=True, mlp_bias=True),
    dict(model_type="qwen2", hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
         num_key_value_heads=1, vocab_size=500, tie_word_embeddings=True),
    dict(model_type="mistral", hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
         num_key_value_heads=2, vocab_size=128),
]


@pytest.mark.parametrize("fields", TINY_VARIANTS)
@pytest.mark.parametrize("rank, targets", [(8, "all-linear"), (4, "q_proj,v_proj"), (3, "o_proj,down_proj,up_proj")])
def test_lora_count_matches_peft(fields, rank, targets):
    peft = pytest.importorskip("peft")
    arch = ModelArch(**fields)
    model = meta_causal_lm(arch)
    assert sum(p.numel() for p in model.parameters()) == param_counts(arch).total
    target_modules = "all-linear" if targets == "all-linear" else targets.split(",")
    peft_model = peft.get_peft_model(model, peft.LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=target_modules))
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    assert trainable == lora_trainable_params(arch, rank, targets)


def test_trainable_tensors_add_up():
    from advisor.formulas.memory import trainable_tensor_numels
    arch = catalog.get_model("Llama-3.2-1B")
    assert sum(trainable_tensor_numels(TrainingSetup(arch=arch, method="full"))) == param_counts(arch).total
    lora = TrainingSetup(arch=arch, method="lora", lora_rank=8, lora_targets=("q_proj", "v_proj"))
    assert sum(trainable_tensor_numels(lora)) == lora_trainable_params(arch, 8, "q_proj,v_proj")


# --- gradient_checkpointing: auto ---------------------------------------------------------------------------

def test_auto_checkpointing_pays_recompute_only_when_memory_needs_it():
    from advisor.plan.sizing import AUTO_CHECKPOINTING_MAX_SHARE, choose_checkpointing
    setup = TrainingSetup(arch=catalog.get_model("Llama-3.1-8B"), micro_batch=2)
    without = memory_per_gpu(TrainingSetup(arch=setup.arch, micro_batch=2, gradient_checkpointing=False)).total
    with_it = memory_per_gpu(TrainingSetup(arch=setup.arch, micro_batch=2, gradient_checkpointing=True)).total
    assert with_it < without
    assert choose_checkpointing(setup, without / AUTO_CHECKPOINTING_MAX_SHARE + 0.01)[0] is False
    # it would fit, but with less than the margin to spare: checkpoint rather than risk the run
    on, reason = choose_checkpointing(setup, without * 1.05)
    assert on is True and f"{without:.1f} GiB" in reason
    assert choose_checkpointing(setup, None) == (False, "auto; no GPU memory to size against")


def test_auto_checkpointing_in_recipe_estimates_and_the_device_memory_wins(tmp_path):
    from advisor.plan.estimate import estimate_recipe
    from advisor.plan.recipe import load_recipe
    from tests.helpers import RECIPES
    # micro-batch 3 x 2048 tokens, gradient_checkpointing: auto (without checkpointing 79.9 GiB: above 90% of an H100,
    # within an H200; at micro-batch 2, 58.8 GiB fits both)
    recipe = load_recipe(RECIPES / "llama3.1-8b-lora.yaml", ["train.micro_batch=3"])
    assert recipe.train.gradient_checkpointing == "auto"
    h100 = estimate_recipe(recipe, "H100-SXM")
    h200 = estimate_recipe(recipe, "H200")
    assert h100.gradient_checkpointing and not h200.gradient_checkpointing
    assert h100.flops_breakdown["recompute"] > 0 and h200.flops_breakdown["recompute"] == 0
    assert h200.peak_memory_gib > h100.peak_memory_gib and h100.fits and h200.fits
    # at run time the device's own total replaces the catalog's (e.g. a 40 GiB slice of an H200)
    small = estimate_recipe(recipe, "H200", device_memory_gib=40.0)
    assert small.gradient_checkpointing and small.gpu_memory_gib == 40.0 and small.fits
    explicit = estimate_recipe(load_recipe(RECIPES / "llama3.1-8b-lora.yaml", ["train.gradient_checkpointing=false"]), "H100-SXM")
    assert not explicit.gradient_checkpointing and not explicit.fits
    assert explicit.gradient_checkpointing_reason == "set in the recipe"
    assert "train.micro_batch: 1" in " ".join(explicit.suggestions)


def test_pretraining_is_costed_by_the_step_time_model_like_the_fine_tunes():
    """advisor recommend's pretraining option: a Llama-shaped model of the compute-optimal size (7B: Llama-2-7B's
    32 x 4096 shape), its GPU-hours the tokens over the step-time model's tokens/s for the setup it would launch,
    not 6ND at a fixed 0.40 of peak."""
    from advisor.catalog import load as catalog
    from advisor.formulas import scaling
    from advisor.decide.costing import cost_pretrain, plan_pretrain, pretraining_arch
    from advisor.plan.estimate import training_efficiency
    from advisor.formulas.params import param_counts
    from advisor.decide.situation import Situation
    arch = pretraining_arch(7e9)
    assert (arch.num_hidden_layers, arch.hidden_size, arch.intermediate_size) == (32, 4096, 11008)
    assert param_counts(arch).total == pytest.approx(7e9, rel=0.05)
    s = Situation(tokens=1e11, gpu="H100-SXM")
    option = cost_pretrain(s)
    point = scaling.compute_optimal_for_tokens(s.effective_tokens, "chinchilla-rule")
    gpu = catalog.get_gpu("H100-SXM")
    plan = plan_pretrain(pretraining_arch(point.params, s.seq_len), point.tokens, gpu, s.seq_len, option.gpus)
    step = training_efficiency(plan.setup, gpu)[2]
    assert option.gpu_hours == pytest.approx(plan.gpu_hours)
    assert option.gpu_hours == pytest.approx(point.tokens / step.tokens_per_second / 3600, rel=1e-6)


def test_fsdp_keeps_bitsandbytes_constants_whole_on_every_gpu():
    """QLoRA under FSDP: the 4-bit codes are sharded (and offloaded with cpu_offload), the quantisation constants are
    not (bitsandbytes keeps them on the module), so each GPU holds all of them."""
    from msgspec.structs import replace

    from advisor.formulas.memory import GIB, NF4_DATA_BYTES, nf4_constant_bytes_per_param
    arch = catalog.get_model("Llama-3.1-70B")
    counts = param_counts(arch)
    setup = TrainingSetup(arch=arch, method="qlora", gpus=2, sharding="fsdp")
    constants = counts.linear_weights * nf4_constant_bytes_per_param(True)
    rest = 2.0 * (counts.total - counts.linear_weights)
    assert memory_per_gpu(setup).weights == pytest.approx(((counts.linear_weights * NF4_DATA_BYTES + rest) / 2 + constants) / GIB)
    assert memory_per_gpu(replace(setup, cpu_offload=True)).weights == pytest.approx(constants / GIB)
    assert memory_per_gpu(replace(setup, method="lora")).weights == pytest.approx(weight_bytes(arch, "lora") / 2 / GIB)


def test_a_hub_dataset_recipe_asks_for_tokens_instead_of_calling_it_missing(tmp_path, capsys):
    """A recipe reading a cached hub dataset: the file-size count cannot see it, so the estimate says to give --tokens
    (never "does not exist", never zero tokens), and costs it when given."""
    from tests.helpers import RECIPES
    from tests.conftest import run_cli
    recipe = tmp_path / "hub.yaml"
    text = (RECIPES / "tiny-cpu-lora.yaml").read_text().replace(
        "path: data/tiny-instructions.jsonl", "path: someorg/some-dataset\n  hub: true")
    recipe.write_text(text.replace("  max_steps: 150\n", ""))  # tokens from the data, not from max_steps
    code, _, err = run_cli(["estimate", recipe, "--gpu", "A100-80GB"], capsys)
    assert code == 2 and "someorg/some-dataset is a hub dataset: give --tokens" in err and "does not exist" not in err
    code, out, err = run_cli(["estimate", recipe, "--gpu", "A100-80GB", "--tokens", "1e7"], capsys)
    assert code == 0 and "Tokens: 10M" in out, err
