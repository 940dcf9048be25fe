"""Architecture descriptions against the libraries: every supported model_type built for real on the meta device
(transformers) with peft's adapters on it; full-size configs against published parameter counts; hub ids from a
local Hugging Face cache."""

import json
import sys
from pathlib import Path

import pytest
from msgspec.structs import replace

from advisor.catalog import load as catalog
from advisor.catalog import hub
from advisor.catalog.arch import HF_CONFIG_DEFAULTS, SUPPORTED_MODEL_TYPES, describe
from advisor.catalog.types import ModelArch
from advisor.core.errors import AdvisorError
from advisor.formulas.memory import trainable_tensor_numels
from advisor.formulas.params import LINEAR_MODULES, lora_trainable_params, matmul_params, param_counts
from advisor.formulas.setup import TrainingSetup
from tests.conftest import meta_causal_lm

CONFIGS = Path(__file__).parents[1] / "data" / "configs"

BASE = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
            vocab_size=300, max_position_embeddings=256)
TINY = {
    "llama": dict(attention_bias=True, mlp_bias=True, tie_word_embeddings=True),
    "mistral": dict(head_dim=24, sliding_window=64),
    "qwen2": dict(num_key_value_heads=1),
    "qwen3": dict(head_dim=16, attention_bias=True),
    "qwen3_moe": dict(head_dim=16, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=40, mlp_only_layers=(1,)),
    "mixtral": dict(num_local_experts=4, num_experts_per_tok=2),
    "gemma2": dict(head_dim=32, tie_word_embeddings=True, sliding_window=32, attn_logit_softcapping=50.0,
                   final_logit_softcapping=30.0, query_pre_attn_scalar=32),
    "gemma3_text": dict(head_dim=32, tie_word_embeddings=True, sliding_window=32, num_key_value_heads=1),
    "phi3": dict(num_key_value_heads=4),
    "gpt_oss": dict(head_dim=16, num_local_experts=4, num_experts_per_tok=2, attention_bias=True, sliding_window=32,
                    layer_types=("sliding_attention", "full_attention", "sliding_attention")),
    "llama4_text": dict(num_local_experts=4, num_experts_per_tok=1, intermediate_size_mlp=128, interleave_moe_layer_step=2,
                        head_dim=16),
    "olmo2": dict(attention_bias=True),
    "glm4_moe": dict(head_dim=16, attention_bias=True, n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=40,
                     n_shared_experts=1, first_k_dense_replace=1, use_qk_norm=True),
    "deepseek_v3": dict(n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=40, n_shared_experts=1,
                        first_k_dense_replace=1, q_lora_rank=24, kv_lora_rank=16, qk_nope_head_dim=12, qk_rope_head_dim=8,
                        v_head_dim=10, num_key_value_heads=4),
    "qwen3_5_moe_text": dict(head_dim=16, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=40,
                             shared_expert_intermediate_size=24, linear_key_head_dim=8, linear_value_head_dim=8,
                             linear_num_key_heads=2, linear_num_value_heads=4, num_hidden_layers=4),
    "kimi_k2": dict(n_routed_experts=6, num_experts_per_tok=2, moe_intermediate_size=40, n_shared_experts=1,
                    first_k_dense_replace=1, q_lora_rank=24, kv_lora_rank=16, qk_nope_head_dim=12, qk_rope_head_dim=8,
                    v_head_dim=10, num_key_value_heads=4),
}
# Per family, target lists as users write them (module names peft matches), besides all-linear.
TARGETS = {
    "phi3": ["qkv_proj,o_proj", "gate_up_proj,down_proj"],
    "mixtral": ["q_proj,v_proj", "w1,w3,w2", "gate,o_proj"],
    "qwen3_moe": ["q_proj,v_proj", "gate_proj,up_proj,down_proj", "gate"],
    "llama4_text": ["q_proj,v_proj", "router,gate_proj", "up_proj,down_proj"],
    "gpt_oss": ["q_proj,v_proj", "o_proj"],
    "glm4_moe": ["q_proj,v_proj", "gate_proj,up_proj,down_proj", "gate"],
    "deepseek_v3": ["q_a_proj,kv_b_proj", "kv_a_proj_with_mqa,o_proj", "gate_proj,up_proj,down_proj", "gate"],
    "kimi_k2": ["q_b_proj,o_proj", "gate_proj,up_proj,down_proj"],
    "qwen3_5_moe_text": ["q_proj,v_proj", "in_proj_qkv,out_proj", "gate_proj,up_proj,down_proj,shared_expert_gate"],
}


def tiny(model_type: str) -> ModelArch:
    return ModelArch(model_type=model_type, **{**BASE, **TINY[model_type]})


def test_every_supported_type_has_a_tiny_case():
    assert set(TINY) == set(SUPPORTED_MODEL_TYPES)


@pytest.mark.parametrize("model_type", SUPPORTED_MODEL_TYPES)
def test_total_matches_transformers_and_lora_matches_peft(model_type):
    peft = pytest.importorskip("peft")
    arch = tiny(model_type)
    model = meta_causal_lm(arch)
    params = dict(model.named_parameters())
    counts = param_counts(arch)
    assert sum(p.numel() for p in params.values()) == counts.total
    assert counts.experts == sum(p.numel() for n, p in params.items() if ".experts." in n)
    for rank, targets in [(4, "all-linear"), *[(3, t) for t in TARGETS.get(model_type, ["q_proj,v_proj", "o_proj,down_proj"])]]:
        model = meta_causal_lm(arch)
        modules = "all-linear" if targets == "all-linear" else targets.split(",")
        peft_model = peft.get_peft_model(model, peft.LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=modules))
        trainable = [p.numel() for p in peft_model.parameters() if p.requires_grad]
        assert sum(trainable) == lora_trainable_params(arch, rank, targets), targets
        setup = TrainingSetup(arch=arch, lora_rank=rank, lora_targets=tuple(modules) if targets != "all-linear"
                              else LINEAR_MODULES)
        assert sorted(trainable_tensor_numels(setup)) == sorted(trainable), targets


@pytest.mark.parametrize("model_type", SUPPORTED_MODEL_TYPES)
def test_full_finetune_tensors_match_transformers(model_type):
    arch = tiny(model_type)
    model = meta_causal_lm(arch)
    assert sorted(trainable_tensor_numels(TrainingSetup(arch=arch, method="full"))) == sorted(
        p.numel() for p in model.parameters())


def test_defaults_table_matches_transformers_config_classes():
    transformers = pytest.importorskip("transformers")
    from advisor.catalog.arch import SAME_ARCHITECTURE
    for model_type, defaults in HF_CONFIG_DEFAULTS.items():
        config = transformers.AutoConfig.for_model(SAME_ARCHITECTURE.get(model_type, model_type))
        for key, value in defaults.items():
            got = getattr(config, key)
            assert (tuple(got) if isinstance(got, list) else got) == value, (model_type, key)


def test_moe_active_params_and_router_in_matmuls():
    arch = tiny("mixtral")
    counts = param_counts(arch)
    per_expert = 3 * 64 * 96
    assert counts.total - counts.active == 3 * (4 - 2) * per_expert  # three layers skip two of four experts
    assert matmul_params(arch) == counts.linear_weights + 3 * (2 * per_expert + 4 * 64) + 300 * 64
    assert describe(arch).moe_layers == (0, 1, 2)
    assert describe(tiny("qwen3_moe")).moe_layers == (0, 2)
    assert describe(tiny("llama4_text")).moe_layers == (1,)


def test_unknown_model_type_refused_in_one_line(tmp_path):
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"model_type": "qwen3_next", "hidden_size": 64}))
    with pytest.raises(AdvisorError) as err:
        catalog.get_model(str(cfg))
    message = str(err.value)
    assert "'qwen3_next' is not supported" in message and "qwen3_moe" in message and "\n" not in message
    with pytest.raises(ValueError, match="not supported"):
        ModelArch(model_type="gpt_neox", **BASE)


def test_fused_targets_refuse_half_of_a_fused_pair():
    with pytest.raises(AdvisorError, match="fused into one gate_up_proj"):
        lora_trainable_params(tiny("mixtral"), 4, "w1")
    with pytest.raises(AdvisorError, match="none of the LoRA targets"):
        lora_trainable_params(tiny("phi3"), 4, "q_proj,v_proj")


# --- full-size configs (tests/data/configs, copied from the hub repositories' config.json) -----------------

# Published totals and active parameters with their sources (advisor/catalog/data/models.yaml repeats them).
PUBLISHED = {
    # Mistral AI's announcement: 46.7B total, 12.9B per token (Jiang et al. 2024, "Mixtral of Experts": 47B / 13B).
    "Mixtral-8x7B-v0.1": (46.7e9, 12.9e9),
    # Qwen3-30B-A3B(-2507) model card: "Number of Parameters: 30.5B in total and 3.3B activated".
    "Qwen3-30B-A3B": (30.5e9, 3.3e9),
    # IBM watsonx announcement of Llama 4: "total parameter count 109B ... active parameter count of only 17B". The
    # 109B is the checkpoint with its vision encoder (the config's vision_config, from ai-dynamo/aiconfigurator
    # @64c5ddb6 model_configs/meta-llama--Llama-4-Scout-17B-16E-Instruct_config.json); the text model alone is 1.1%
    # smaller, and is what a text fine-tune loads.
    "Llama-4-Scout-17B-16E-Instruct": (109e9, 17e9),
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_full_size_moe_totals_match_published(name):
    arch = catalog.get_model(str(CONFIGS / f"{name}.config.json"))
    total, active = PUBLISHED[name]
    counts = param_counts(arch)
    assert counts.checkpoint_total == pytest.approx(total, rel=0.005)
    assert counts.active == pytest.approx(active, rel=0.03)


def test_llama4_checkpoint_counts_equal_transformers():
    """Scout's text model and its vision encoder + projector, counted by advisor, equal transformers' modules built
    from the same config on the meta device (no weights)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    raw = json.loads((CONFIGS / "Llama-4-Scout-17B-16E-Instruct.config.json").read_text())
    config = transformers.Llama4Config(text_config=raw["text_config"], vision_config=raw["vision_config"])
    with torch.device("meta"):
        model = transformers.Llama4ForConditionalGeneration(config)
    vision = sum(p.numel() for n, p in model.named_parameters() if n.startswith(("vision_model.", "multi_modal_projector.")))
    total = sum(p.numel() for p in model.parameters())
    counts = param_counts(catalog.get_model(str(CONFIGS / "Llama-4-Scout-17B-16E-Instruct.config.json")))
    assert (counts.total, counts.checkpoint_total) == (total - vision, total)


def test_uncounted_vision_encoder_says_so(tmp_path):
    """A multimodal config whose vision encoder advisor does not count leaves checkpoint_total unknown (None)
    rather than reporting the text model as the whole checkpoint."""
    raw = json.loads((CONFIGS / "Llama-4-Scout-17B-16E-Instruct.config.json").read_text())
    raw["vision_config"] = {"model_type": "siglip_vision_model", "hidden_size": 1152}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(raw))
    arch = catalog.get_model(str(path))
    assert arch.vision_model_type == "siglip_vision_model" and arch.vision_encoder_params is None
    assert param_counts(arch).checkpoint_total is None
    assert param_counts(catalog.get_model(str(CONFIGS / "Qwen3-8B.config.json"))).checkpoint_total == \
        param_counts(catalog.get_model(str(CONFIGS / "Qwen3-8B.config.json"))).total


# --- hub ids ------------------------------------------------------------------------------------------------

def _fake_cache(root: Path, hub_id: str, config: dict) -> Path:
    repo = root / ("models--" + hub_id.replace("/", "--"))
    snap = repo / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (snap / "config.json").write_text(json.dumps(config))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    return snap / "config.json"


def test_hub_id_from_local_cache_offline(tmp_path, monkeypatch):
    config = json.loads((CONFIGS / "Qwen3-8B.config.json").read_text())
    _fake_cache(tmp_path, "Qwen/Qwen3-8B-test", config)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    arch = catalog.get_model("Qwen/Qwen3-8B-test")
    assert arch.model_type == "qwen3" and arch.name == "Qwen/Qwen3-8B-test"
    assert param_counts(arch).total == param_counts(catalog.get_model("Qwen3-8B")).total
    with pytest.raises(AdvisorError) as err:
        catalog.get_model("nobody/no-such-model")
    assert "not in the model catalog nor in the local Hugging Face cache" in str(err.value)
    assert "HF_HUB_OFFLINE" in str(err.value) and "\n" not in str(err.value)


def test_hub_cache_location_follows_hf_env(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    assert hub.hf_cache_dir() == tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "c"))
    assert hub.hf_cache_dir() == tmp_path / "c"


def test_hub_id_fetched_online_only_config_json(tmp_path, monkeypatch):
    calls = []
    target = tmp_path / "downloaded.json"
    target.write_text((CONFIGS / "Mixtral-8x7B-v0.1.config.json").read_text())

    class FakeHub:
        @staticmethod
        def hf_hub_download(repo_id, filename):
            calls.append((repo_id, filename))
            if repo_id != "mistralai/Mixtral-test":
                raise RuntimeError("404 Client Error: Repository Not Found\nmore detail")
            return str(target)

    monkeypatch.setitem(sys.modules, "huggingface_hub", FakeHub)
    monkeypatch.setattr(hub, "reachable", lambda host: True)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    assert catalog.get_model("mistralai/Mixtral-test").model_type == "mixtral"
    assert calls == [("mistralai/Mixtral-test", "config.json")]
    with pytest.raises(AdvisorError, match="fetching its config.json from the hub failed: 404 Client Error"):
        catalog.get_model("nobody/missing")
    monkeypatch.setattr(hub, "reachable", lambda host: False)
    with pytest.raises(AdvisorError, match="huggingface.co cannot be reached"):
        catalog.get_model("nobody/unreachable")
    assert calls == [("mistralai/Mixtral-test", "config.json"), ("nobody/missing", "config.json")]


CATALOG = [e for e in catalog.entries("models")]


@pytest.mark.parametrize("entry", [e for e in CATALOG if e.published_total or e.published_active], ids=lambda e: e.name)
def test_catalog_counts_match_published_rounded_figures(entry):
    counts = param_counts(entry)
    if entry.published_total:
        assert counts.checkpoint_total == pytest.approx(entry.published_total, rel=0.005)
    if entry.published_active:
        assert counts.active == pytest.approx(entry.published_active, rel=0.03)


def test_catalog_lists_current_moe_and_dense_models_with_sources_and_dates():
    names = {e.name for e in CATALOG}
    assert {"Qwen3-8B", "Qwen3-30B-A3B", "Mixtral-8x7B", "gpt-oss-20b", "Llama-4-Scout-17B-16E", "gemma-3-1b-it",
            "Phi-3.5-mini-instruct"} <= names
    for e in CATALOG:
        assert e.source and e.date, e.name
        describe(e)  # every catalog model is a supported architecture


# --- the commands -------------------------------------------------------------------------------------------

def test_estimate_hub_id_offline_from_cache_and_one_line_failure(tmp_path, monkeypatch, capsys):
    from tests.conftest import run_cli
    _fake_cache(tmp_path, "Qwen/Qwen3-8B-cached", json.loads((CONFIGS / "Qwen3-8B.config.json").read_text()))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    code, out, err = run_cli(["estimate", "--model", "Qwen/Qwen3-8B-cached", "--method", "qlora", "--gpu", "A10G"], capsys)
    assert code == 0, err
    assert "8.19B total" in out and "qwen3: 36 layers" in out
    code, out, err = run_cli(["estimate", "--model", "nobody/nothing-here"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "nobody/nothing-here" in err


def test_estimate_moe_shows_active_and_sizes_qlora(capsys):
    from tests.conftest import run_cli
    code, out, _ = run_cli(["estimate", "--model", "Mixtral-8x7B", "--method", "qlora", "--gpu", "H100-SXM", "--json"],
                           capsys)
    data = json.loads(out)
    assert code == 0 and data["total_params"] == 46_702_792_704 and data["active_params"] == 12_879_925_248
    # attention in NF4; 45.1B expert parameters left unquantised by bitsandbytes, in bf16 as the runner keeps them
    # (no peft fp32 upcast): more than one H100's memory
    assert data["memory_gib"]["weights"] > 45.1e9 * 2 / 2**30 and not data["fits"] and data["gpus_needed"] >= 2
    code, out, _ = run_cli(["estimate", "--model", "Mixtral-8x7B", "--method", "qlora", "--gpu", "H100-SXM", "--json",
                            "--qlora-embeddings-dtype", "fp32"], capsys)  # peft's upcast, as HF + peft stacks run it
    data = json.loads(out)
    assert data["memory_gib"]["weights"] > 45.1e9 * 4 / 2**30 and data["gpus_needed"] >= 4


@pytest.mark.parametrize("kind, column", [("models", "active"), ("gpus", "price_usd_per_hour"), ("apis", "vendor")])
def test_catalog_commands_show_source_and_date(kind, column, capsys):
    from tests.conftest import run_cli
    code, out, _ = run_cli(["catalog", kind], capsys)
    header = out.splitlines()[0].split()
    assert code == 0 and {"date", "source", column} <= set(header)
    code, out, _ = run_cli(["catalog", kind, "--json"], capsys)
    assert all(e["source"] and e["date"] for e in json.loads(out))


def test_stale_and_retired_prices_are_flagged():
    import datetime

    from advisor.catalog.load import price_is_stale
    from advisor.render.notices import price_notices
    today = datetime.date(2026, 12, 1)
    assert price_is_stale("2024-10", today) and price_is_stale("2025-12-01", today) and price_is_stale("", today)
    assert not price_is_stale("2025-12-02", today) and not price_is_stale("2026-09-22", today)
    old_gpu = replace(catalog.get_gpu("A100-80GB"), price_date="2024-10")
    lines = price_notices([old_gpu, catalog.get_api("gpt-4o-mini"), catalog.get_api("gpt-6-luna")], today)
    assert any("A100-80GB" in line and "gpus.yaml" in line and "2024-10" in line for line in lines)
    # a GPU's `date` dates its specifications; a recent price_date is not stale however old the datasheet
    fresh_price = replace(catalog.get_gpu("A100-80GB"), date="2020-05", price_date="2026-07")
    assert not price_notices([fresh_price], today)
    assert any("gpt-4o-mini is retired" in line for line in lines)
    assert not any("gpt-6-luna" in line for line in lines)


def test_default_api_is_current():
    from advisor.decide.situation import Situation
    api = catalog.get_api(Situation(tokens=1.0).api)  # the default
    assert not api.retired


# --- attention over sliding windows ----------------------------------------------------------------------------

@pytest.mark.parametrize("model_type", ["gemma2", "gemma3_text", "gpt_oss", "llama"])
def test_attended_keys_equal_a_counted_mask(model_type):
    """advisor.formulas.flops.attended_keys against the keys a boolean causal (windowed) mask admits, layer by layer, as
    transformers' sliding layers mask them (key j visible to query i when i - w < j <= i)."""
    from advisor.catalog.arch import describe
    from advisor.formulas.flops import attended_keys
    arch = tiny(model_type)
    seq = 96
    windows = [layer.sliding_window for layer in describe(arch).layers]
    counted = sum(sum(min(i + 1, w or seq) for i in range(seq)) / seq for w in windows)
    assert attended_keys(arch, seq, causal=True) == pytest.approx(counted, rel=2.0 / seq)  # T/2 for (T+1)/2
    assert attended_keys(arch, seq, causal=False) == pytest.approx(2 * attended_keys(arch, seq, causal=True))
    assert attended_keys(arch, seq, causal=True, windowed=False) == pytest.approx(len(windows) * seq / 2)
    if any(windows):
        assert attended_keys(arch, seq, causal=True) < len(windows) * seq / 2


def test_sliding_window_layers_cut_attention_flops_only():
    """A Gemma-3 estimate at a context beyond its window counts fewer attention FLOPs than the same shape with
    every layer full, and the same matmul FLOPs."""
    from advisor.formulas.flops import flops_per_token
    arch = tiny("gemma3_text")
    full = replace(arch, layer_types=tuple("full_attention" for _ in range(arch.num_hidden_layers)),
                   sliding_window_pattern=None)
    windowed, dense = flops_per_token(arch, 4096, "lora"), flops_per_token(full, 4096, "lora")
    assert windowed.total < dense.total
    assert flops_per_token(arch, 8, "lora").total == pytest.approx(flops_per_token(full, 8, "lora").total)


@pytest.mark.parametrize("model_type", ["gemma2", "gemma3_text", "gpt_oss", "qwen3", "llama"])
def test_sliding_layers_match_transformers_layer_types(model_type):
    """Which layers slide, and over what window, as transformers' config class lays them out for the same fields."""
    transformers = pytest.importorskip("transformers")
    from advisor.catalog.arch import describe
    for arch in (tiny(model_type), replace(tiny(model_type), num_hidden_layers=13, layer_types=None)):
        config = transformers.AutoConfig.for_model(**arch.hf_config_dict())
        types = getattr(config, "layer_types", None) or ["full_attention"] * config.num_hidden_layers
        expected = [config.sliding_window if t == "sliding_attention" else None for t in types]
        assert [layer.sliding_window for layer in describe(arch).layers] == expected
