"""fp32 adapters on a bf16 base (runners.upcast): autograd keeps the bf16 adapter inputs, not their fp32 copies, with
bit-identical gradients; and the CPU step's freed heap goes back to the OS (runners.hostmem)."""

from contextlib import nullcontext

import pytest
import torch

from bench.measure import LiveBytes
from runners.hostmem import release_freed_host_memory
from runners.upcast import keep_upcast_sources, saved_as_source


def _tiny_lora(dtype=torch.bfloat16):
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2Config, Qwen2ForCausalLM
    torch.manual_seed(0)
    config = Qwen2Config(hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=97, attn_implementation="sdpa", use_cache=False)
    model = Qwen2ForCausalLM(config).to(dtype)
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    for name, param in model.named_parameters():  # non-zero B, so every adapter's A gets a gradient
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.02)
    return model.train()


def _step(model, ids, context):
    mode = LiveBytes()
    with mode:
        with context():
            out = model(input_ids=ids, labels=ids, use_cache=False)
        out.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad(set_to_none=True)
    return out.loss.detach(), grads, mode.peak


def test_saved_as_source_keeps_bf16_inputs_with_identical_gradients():
    model = _tiny_lora()
    assert keep_upcast_sources(model) == 14  # 7 projections x 2 layers
    ids = torch.randint(0, 97, (2, 48))
    loss_stock, grads_stock, peak_stock = _step(model, ids, nullcontext)
    loss_ours, grads_ours, peak_ours = _step(model, ids, saved_as_source)
    assert torch.equal(loss_ours, loss_stock)
    assert grads_ours.keys() == grads_stock.keys() and all(torch.equal(grads_ours[k], grads_stock[k]) for k in grads_ours)
    assert all(g.dtype == torch.float32 and torch.count_nonzero(g) for g in grads_ours.values())
    assert peak_ours < peak_stock  # 2 bytes per saved adapter input instead of 4, one copy where q/k/v share it


def test_fp32_base_is_unchanged():
    """No cast happens on an fp32 base, so nothing is marked and the step is the stock one."""
    model = _tiny_lora(torch.float32)
    keep_upcast_sources(model)
    ids = torch.randint(0, 97, (1, 32))
    _, grads_stock, peak_stock = _step(model, ids, nullcontext)
    _, grads_ours, peak_ours = _step(model, ids, saved_as_source)
    assert all(torch.equal(grads_ours[k], grads_stock[k]) for k in grads_ours) and peak_ours == peak_stock


def test_release_freed_host_memory_only_on_the_cpu():
    import platform
    assert release_freed_host_memory("cuda") is False
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert release_freed_host_memory("cpu") is True


def _mapped_ranges(path_part: str) -> list[tuple[int, int]]:
    from pathlib import Path
    ranges = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        if path_part in line:
            start, end = (int(x, 16) for x in line.split()[0].split("-"))
            ranges.append((start, end))
    return ranges


def test_quantized_cpu_model_lets_go_of_its_checkpoint_file(tmp_path):
    """After a 4-bit load on the CPU the unquantised tensors are views of the memory-mapped checkpoint (keeping the
    whole file's read pages resident); runners.hostmem.detach_from_checkpoint_file copies them out, values unchanged,
    and the file is no longer mapped. A 16-bit model and CUDA are left alone."""
    import gc
    import platform
    from pathlib import Path

    from advisor.plan.recipe import load_recipe
    from runners.hostmem import detach_from_checkpoint_file
    from runners.model import load_model, random_checkpoint
    if platform.system() != "Linux":
        pytest.skip("reads /proc/self/maps")
    recipe = load_recipe(Path(__file__).parents[2] / "recipes" / "tiny-cpu-qlora.yaml", [])
    source = random_checkpoint(recipe, torch.float32, tmp_path, 0)
    model = load_model(recipe, torch.device("cpu"), tmp_path, 0)
    gc.collect()
    file = str(source / "model.safetensors")
    unquantised = [t for t in [*model.parameters(), *model.buffers()] if type(t).__name__ != "Params4bit"]

    def in_file(t):
        return any(a <= t.data_ptr() < b for a, b in _mapped_ranges(file))
    assert any(in_file(t) for t in unquantised)  # what the loader leaves: views of the map
    before = [t.detach().clone() for t in unquantised]
    assert detach_from_checkpoint_file(model, "cuda", True) == 0
    assert detach_from_checkpoint_file(model, "cpu", False) == 0
    assert detach_from_checkpoint_file(model, "cpu", True) == len(unquantised)
    gc.collect()
    assert not any(in_file(t) for t in unquantised)
    assert all(torch.equal(a, b) for a, b in zip(before, unquantised))
    assert not _mapped_ranges(file)  # nothing else held the map: it is closed


def test_large_host_tensors_get_their_own_mappings_on_cpu_only():
    """runners.hostmem.map_large_host_tensors sets glibc's mmap threshold on the CPU, leaves CUDA and a user's own
    MALLOC_MMAP_THRESHOLD_ alone (each case in a fresh process: the setting is process-wide)."""
    import os
    import subprocess
    import sys

    from runners.hostmem import _glibc
    if _glibc() is None:
        pytest.skip("not glibc")
    code = "import sys; from runners.hostmem import map_large_host_tensors as m; print(m(sys.argv[1]))"
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_MMAP_THRESHOLD_"}

    def ask(device, **extra):
        return subprocess.run([sys.executable, "-c", code, device], capture_output=True, text=True, check=True,
                              env={**env, **extra}).stdout.strip()
    assert ask("cpu") == "True"
    assert ask("cuda") == "False"
    assert ask("cpu", MALLOC_MMAP_THRESHOLD_="1048576") == "False"
