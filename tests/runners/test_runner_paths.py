"""Runner paths beyond the default recipe: local models, accumulation, checkpointing, merging, optimizers, FSDP QLoRA."""

import json

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import run_cli
from tests.helpers import RECIPES, reload_eval_loss, train_losses

TINY = RECIPES / "tiny-cpu-lora.yaml"
FEW = ["--set", "train.max_steps=12", "--set", "train.eval_every=0", "--set", "train.checkpoint_every=0"]


def _run(tmp_path, capsys, name, *extra, recipe=TINY):
    out = tmp_path / name
    code, stdout, err = run_cli(["run", recipe, "--out", out, *FEW, *extra], capsys)
    assert code == 0, err
    return out


def _adapter(out):
    return load_file(out / "adapter" / "adapter_model.safetensors")


def test_gradient_accumulation_equals_a_larger_batch(tmp_path, capsys):
    """4 sequences in one micro-batch, or 2 x 2 accumulated: the same gradient (loss normalised over the step's tokens)."""
    one = _run(tmp_path, capsys, "mb4", "--set", "train.micro_batch=4", "--set", "train.grad_accum=1")
    two = _run(tmp_path, capsys, "mb2x2", "--set", "train.micro_batch=2", "--set", "train.grad_accum=2")
    assert train_losses(one) == pytest.approx(train_losses(two), rel=1e-5)
    a, b = _adapter(one), _adapter(two)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)  # summation order differs


def test_gradient_checkpointing_changes_memory_not_math(tmp_path, capsys):
    plain = _run(tmp_path, capsys, "plain")
    ckpt = _run(tmp_path, capsys, "ckpt", "--set", "train.gradient_checkpointing=true")
    assert train_losses(plain) == pytest.approx(train_losses(ckpt), rel=1e-6)
    report = json.loads((ckpt / "report.json").read_text())
    assert report["executed_flops"] > report["model_flops"]  # the recompute is counted as executed work


def test_compiled_layers_give_the_eager_losses(tmp_path, capsys):
    """train.compile: every decoder layer torch.compiled (inductor's CPU code here), with checkpointing on too, the
    riskier combination; the loss curve and the adapter match the eager run's."""
    from advisor.plan.recipe import load_recipe
    from runners.model import attach_adapters, compile_layers, load_model
    recipe = load_recipe(TINY)
    model = attach_adapters(load_model(recipe, torch.device("cpu"), tmp_path / "cache", 0), recipe, False)
    assert compile_layers(model) == recipe.model.resolve_arch().num_hidden_layers
    few = ["--set", "train.max_steps=4", "--set", "train.gradient_checkpointing=true"]
    eager = _run(tmp_path, capsys, "eager", *few)
    compiled = _run(tmp_path, capsys, "compiled", *few, "--set", "train.compile=true")
    assert train_losses(compiled) == pytest.approx(train_losses(eager), rel=1e-5)
    a, b = _adapter(eager), _adapter(compiled)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)


def test_flex_attention_is_refused_on_cpu_before_anything_loads(tmp_path, capsys):
    code, _, err = run_cli(["run", TINY, "--out", tmp_path / "flex", "--set", "model.attn_implementation=flex_attention"], capsys)
    assert code == 2 and "flex_attention trains on CUDA GPUs only" in err and "Traceback" not in err
    assert not (tmp_path / "flex").exists()


def test_merged_model_matches_base_plus_adapter(tmp_path, capsys):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from advisor.plan.recipe import load_recipe
    from runners.model import load_model
    from runners.environment import cache_root
    out = _run(tmp_path, capsys, "merge", "--set", "train.merge=true")
    merged = AutoModelForCausalLM.from_pretrained(str(out / "merged"), use_safetensors=True).eval()
    recipe = load_recipe(out / "recipe.resolved.yaml")
    base = load_model(recipe, torch.device("cpu"), cache_root(), recipe.train.seed)
    with_adapter = PeftModel.from_pretrained(base, str(out / "adapter")).eval()
    ids = torch.randint(0, 259, (2, 32))
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=ids).logits, with_adapter(input_ids=ids).logits, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("optimizer", ["adamw-8bit", "paged-adamw-8bit"])
def test_eight_bit_optimizers(tmp_path, capsys, optimizer):
    out = _run(tmp_path, capsys, optimizer, "--set", f"train.optimizer={optimizer}")
    losses = train_losses(out)
    assert losses[-1] < losses[0]


def test_local_model_directory(tmp_path, capsys):
    """A model and tokenizer saved with save_pretrained (safetensors), named by path: the from_pretrained path."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from runners.tokenizer import byte_tokenizer
    model_dir = tmp_path / "my-model"
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                 num_key_value_heads=2, vocab_size=259)).save_pretrained(model_dir, safe_serialization=True)
    byte_tokenizer().save_pretrained(model_dir)
    recipe = tmp_path / "local.yaml"
    recipe.write_text(f"name: local\nmodel: {{name: {model_dir}}}\nlora: {{r: 4, alpha: 8}}\n"
                      f"data: {{path: {RECIPES / 'data/tiny-instructions.jsonl'}, format: instruction, seq_len: 256}}\n"
                      "train: {micro_batch: 4, lr: 1.0e-2}\n")
    out = _run(tmp_path, capsys, "local", recipe=recipe)
    report = json.loads((out / "report.json").read_text())
    assert report["trainable_params"] == report["estimate"]["trainable_params"] == 2 * 4 * (
        (64 + 64) * 2 + (64 + 32) * 2 + (64 + 128) * 3)
    assert reload_eval_loss(out) == pytest.approx(report["loss"]["eval"], rel=1e-5)


@pytest.mark.slow
def test_qlora_with_fsdp(tmp_path, capsys):
    """4-bit weights stored in a float dtype so FSDP2 can shard them (bnb_4bit_quant_storage), two processes."""
    out = tmp_path / "qlora-fsdp"
    code, _, err = run_cli(["run", RECIPES / "tiny-cpu-qlora.yaml", "--nproc-per-node", "2", "--out", out,
                            "--set", "launch.strategy=fsdp", "--set", "train.max_steps=10"], capsys)
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    assert report["world_size"] == 2 and report["method"] == "qlora"
    assert report["loss"]["last"] < report["loss"]["first"]


@pytest.mark.parametrize("policy", ["allocator", "release"])
def test_host_memory_setting_decides_the_cpu_allocator_policy(tmp_path, capsys, monkeypatch, policy):
    """train.host_memory: `release` sets glibc's mmap threshold once and trims the heap after every step (the losses
    unchanged); `allocator`, the default (bench/README.md has the paired measurement behind it), does neither."""
    import runners.session
    import runners.train
    from advisor.plan.recipe_sections import TrainSection
    assert TrainSection().host_memory == "allocator"
    calls = {"map": 0, "trim": 0}
    monkeypatch.setattr(runners.session, "map_large_host_tensors",
                        lambda device_type: calls.__setitem__("map", calls["map"] + 1) or False)
    monkeypatch.setattr(runners.train, "release_freed_host_memory",
                        lambda device_type: calls.__setitem__("trim", calls["trim"] + 1) or False)
    out = _run(tmp_path, capsys, policy, "--set", "train.max_steps=3", "--set", f"train.host_memory={policy}")
    assert calls == ({"map": 1, "trim": 3} if policy == "release" else {"map": 0, "trim": 0})
    assert len(train_losses(out)) == 3
