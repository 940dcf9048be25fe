"""Peak live tensor bytes of one train_step (grad_accum 2, stock loss, 32k vocab): with and without `del out`, the live
bytes when the second micro-batch's forward starts. Usage: python bench/step_outputs.py"""
import inspect
import textwrap
import sys
import torch
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import runners.train as T
from bench.measure import LiveBytes
from runners.data import PackedRows, get_batch
from runners.distributed import DistContext
from transformers import LlamaConfig, LlamaForCausalLM
from peft import LoraConfig, get_peft_model
from advisor.plan.recipe import load_recipe
torch.manual_seed(0)
cfg = LlamaConfig(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, vocab_size=32000, attn_implementation="sdpa")
model = get_peft_model(LlamaForCausalLM(cfg), LoraConfig(r=8, target_modules="all-linear"))
recipe = load_recipe(Path(__file__).resolve().parents[1] / "recipes/tiny-cpu-lora.yaml", ["train.grad_accum=2", "train.micro_batch=2", "train.fused_loss=false"])
seq = 512
rows = [{"input_ids": torch.randint(0, 32000, (seq,)), "labels": torch.randint(0, 32000, (seq,)), "position_ids": torch.arange(seq)} for _ in range(4)]
flat = PackedRows(torch.cat([r["input_ids"] for r in rows]).int(), torch.cat([r["labels"] for r in rows]).int(), torch.cat([r["position_ids"] for r in rows]).int(), torch.tensor([0, seq, 2*seq, 3*seq, 4*seq]))
ctx = DistContext(0, 0, 1, torch.device("cpu"))
batches = [get_batch(flat, [0, 1, 2, 3], k, 2, 0, 1, 0) for k in range(2)]
params = [p for p in model.parameters() if p.requires_grad]
opt = torch.optim.AdamW(params, lr=1e-4)
src = textwrap.dedent(inspect.getsource(T.train_step)).replace("        del out  # the step's outputs (logits included) are freed before the next forward\n", "")
assert "del out" not in src
ns = dict(vars(T))
exec(src, ns)
without_del = ns["train_step"]
T.train_step(model, opt, params, batches, ctx, torch.float32, recipe.train, 0)  # optimizer state created
for name, fn in (("with del out", T.train_step), ("without del out", without_del), ("with del out", T.train_step)):
    starts = []
    with LiveBytes() as mode:
        hook = model.register_forward_pre_hook(lambda m, a: starts.append(mode.current))  # noqa: B023 - used in this iteration
        fn(model, opt, params, batches, ctx, torch.float32, recipe.train, 1)
        hook.remove()
    print(f"{name}: live at the 2nd micro-batch's forward {starts[1] / 2**20:.1f} MiB, step peak {mode.peak / 2**20:.1f} MiB (logits of one micro-batch: {2*seq*32000*4/2**20:.1f} MiB fp32)")
