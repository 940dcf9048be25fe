"""The recipe fields behind the estimator's memory terms (adapter dtype, QLoRA's unquantised dtype, activation
offloading, FSDP CPU offload): a passes and a raises case per rule, the estimate following each field, and a tiny
CPU run with each field the runner runs."""

import json

import pytest
import torch
from safetensors.torch import load_file

from advisor.core.errors import AdvisorError
from advisor.plan.estimate import estimate_recipe
from advisor.plan.recipe_setup import recipe_setup
from advisor.plan.recipe import load_recipe
from tests.conftest import run_cli
from tests.helpers import RECIPES, train_losses

BASE = "name: t\nmodel: {name: meta-llama/Llama-3.1-8B}\ndata: {path: d.jsonl}\n"
FEW = ["--set", "train.max_steps=6", "--set", "train.eval_every=0", "--set", "train.checkpoint_every=0"]


def _load(tmp_path, extra: str):
    """An 8B recipe at 4 x 4096 tokens with checkpointing, plus `extra`."""
    (tmp_path / "d.jsonl").write_text('{"text": "hello"}\n')
    path = tmp_path / "r.yaml"
    path.write_text("name: t\nmodel: {name: meta-llama/Llama-3.1-8B}\ndata: {path: d.jsonl, seq_len: 4096}\n" + extra)
    return load_recipe(path)


@pytest.mark.parametrize("passes, raises, needle", [
    ("launch: {strategy: fsdp, cpu_offload: true, nproc_per_node: 2}\n",
     "launch: {strategy: ddp, cpu_offload: true, nproc_per_node: 2}\n", "set launch.strategy: fsdp"),
    ("launch: {strategy: fsdp, cpu_offload: true, nproc_per_node: 2}\n",
     "quant: {}\nlaunch: {strategy: fsdp, cpu_offload: true, nproc_per_node: 2}\n", "advisor estimate --method qlora --cpu-offload"),
    ("lora: {dtype: bfloat16}\nmodel: {name: meta-llama/Llama-3.1-8B, dtype: bfloat16}\n",
     "lora: {dtype: bfloat16}\nmodel: {name: meta-llama/Llama-3.1-8B, dtype: float16}\n", "use lora.dtype: float32"),
])
def test_offload_and_dtype_rules(tmp_path, passes, raises, needle):
    base = BASE.replace("model: {name: meta-llama/Llama-3.1-8B}\n", "") if "model:" in passes else BASE
    (tmp_path / "d.jsonl").write_text('{"text": "hello"}\n')
    for text, ok in ((passes, True), (raises, False)):
        path = tmp_path / "r.yaml"
        path.write_text((base if "model:" in text else BASE) + text)
        if ok:
            load_recipe(path)
        else:
            with pytest.raises(AdvisorError) as err:
                load_recipe(path)
            assert needle in str(err.value) and "\n" not in str(err.value)


def test_estimate_follows_the_fields(tmp_path):
    train = "train: {gradient_checkpointing: true, micro_batch: 4%s}\n"
    plain = _load(tmp_path, train % "")
    setup = recipe_setup(plain)
    assert (setup.adapter_dtype, setup.activation_offloading, setup.cpu_offload, setup.qlora_embeddings_dtype) == \
        ("float32", False, False, "bfloat16")
    base = estimate_recipe(plain, "A100-80GB")
    bf16 = estimate_recipe(_load(tmp_path, "lora: {dtype: bfloat16}\n" + train % ""), "A100-80GB")
    assert bf16.memory_gib["optimizer"] == pytest.approx(base.memory_gib["optimizer"] / 2)
    assert bf16.memory_gib["adapters"] == pytest.approx(base.memory_gib["adapters"] / 2)
    off = estimate_recipe(_load(tmp_path, train % ", activation_offloading: true"), "A100-80GB")
    assert recipe_setup(_load(tmp_path, train % ", activation_offloading: true")).activation_offloading
    assert off.peak_memory_gib < base.peak_memory_gib
    q32, q16 = (estimate_recipe(_load(tmp_path, f"quant: {{unquantized_dtype: {d}}}\n"), "A100-80GB")
                for d in ("float32", "compute"))
    assert recipe_setup(_load(tmp_path, "quant: {unquantized_dtype: float32}\n")).qlora_embeddings_dtype == "float32"
    assert q32.memory_gib["weights"] > q16.memory_gib["weights"]
    fsdp = "launch: {strategy: fsdp, nproc_per_node: 2%s}\n"
    sharded = estimate_recipe(_load(tmp_path, fsdp % ""), "A100-80GB")
    offloaded = estimate_recipe(_load(tmp_path, fsdp % ", cpu_offload: true"), "A100-80GB")
    assert recipe_setup(_load(tmp_path, fsdp % ", cpu_offload: true")).cpu_offload
    assert offloaded.memory_gib["weights"] == 0 and sharded.memory_gib["weights"] > 0


def _run(tmp_path, capsys, name, *extra, recipe="tiny-cpu-lora.yaml"):
    out = tmp_path / name
    code, _, err = run_cli(["run", RECIPES / recipe, "--out", out, *FEW, *extra], capsys)
    assert code == 0, err
    return out, err


def test_bf16_adapters_train_and_are_saved_in_bf16(tmp_path, capsys):
    out, _ = _run(tmp_path, capsys, "bf16", "--set", "lora.dtype=bfloat16")
    adapter = load_file(out / "adapter" / "adapter_model.safetensors")
    assert adapter and {t.dtype for t in adapter.values()} == {torch.bfloat16}
    losses = train_losses(out)
    assert losses[-1] < losses[0]


def test_qlora_float32_unquantised_parameters(tmp_path, capsys):
    """peft's upcast on request: the run trains with the unquantised parameters in fp32 (the tiny QLoRA recipe's
    model is bfloat16 here, so the upcast changes something on the CPU)."""
    from runners.model import attach_adapters, load_model
    recipe = load_recipe(RECIPES / "tiny-cpu-qlora.yaml", ["model.dtype=bfloat16", "quant.compute_dtype=bfloat16",
                                                           "quant.unquantized_dtype=float32"])
    model = attach_adapters(load_model(recipe, torch.device("cpu"), tmp_path / "cache", 0), recipe, False)
    norms = [p for n, p in model.named_parameters() if "norm" in n]
    assert norms and all(p.dtype == torch.float32 for p in norms)
    out, _ = _run(tmp_path, capsys, "q32", "--set", "quant.unquantized_dtype=float32", recipe="tiny-cpu-qlora.yaml")
    assert json.loads((out / "report.json").read_text())["steps"] == 6


def test_activation_offloading_on_cpu_says_it_moves_nothing(tmp_path, capsys):
    plain, _ = _run(tmp_path, capsys, "plain", "--set", "train.gradient_checkpointing=true")
    off, err = _run(tmp_path, capsys, "off", "--set", "train.gradient_checkpointing=true",
                    "--set", "train.activation_offloading=true")
    assert "nothing is offloaded" in err
    assert train_losses(off) == pytest.approx(train_losses(plain), rel=1e-6)


def test_offloaded_saved_tensors_give_the_same_gradients():
    """The offload hooks forced on the CPU (copies within host memory): the gradients are those of a plain step, and
    with checkpointing far fewer bytes pass through them (only the layers' inputs and the head's tensors)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from runners.offload import offload_saved_tensors
    moved = {}
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = LlamaForCausalLM(LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                             num_attention_heads=4, num_key_value_heads=2, vocab_size=97, use_cache=False))
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        ids = torch.randint(0, 97, (2, 32))
        grads = []
        for force in (False, True):
            model.zero_grad(set_to_none=True)
            hooks = offload_saved_tensors(model, torch.device("cpu"), enabled=True, force=force)
            with hooks:
                loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            grads.append([p.grad.clone() for p in model.parameters()])
        moved[checkpointing] = hooks.moved_bytes  # the forced (last) pass's
        for a, b in zip(*grads):
            torch.testing.assert_close(a, b)
    assert 0 < moved[True] < moved[False] / 2


@pytest.mark.slow
def test_fsdp_cpu_offload_two_processes(tmp_path, capsys):
    out, _ = _run(tmp_path, capsys, "fsdp-offload", "--nproc-per-node", "2", "--set", "launch.strategy=fsdp",
                    "--set", "launch.cpu_offload=true", "--set", "train.max_steps=10")
    report = json.loads((out / "report.json").read_text())
    assert report["world_size"] == 2 and report["loss"]["last"] < report["loss"]["first"]
    assert "cpu_offload: true" in (out / "recipe.resolved.yaml").read_text()


def test_offload_notices_only_off_cuda():
    from runners.offload import offload_notices
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert offload_notices(False, True, cpu) == ["launch.cpu_offload: this run is on the CPU; FSDP's CPU offload "
                                                 "runs but moves nothing"]
    assert len(offload_notices(True, True, cpu)) == 2 and offload_notices(True, True, cuda) == []
