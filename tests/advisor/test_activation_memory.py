"""The activation-memory estimate against bytes autograd really keeps, on shapes the fit never saw."""

import pytest

pytest.importorskip("torch")

from advisor.catalog.types import ModelArch  # noqa: E402
from advisor.formulas.memory import activation_bytes_per_token_per_layer
from advisor.formulas.params import LINEAR_MODULES
from bench.measure import activation_bytes_per_layer_token, lora_builder, qlora_builder  # noqa: E402


@pytest.mark.parametrize("shape", [(448, 1536, 7, 1), (288, 768, 6, 3)])  # not among bench/activation_memory.py's shapes
@pytest.mark.parametrize("targets, rank", [(LINEAR_MODULES, 16), (("q_proj", "v_proj"), 8), ((), 0)])
def test_activation_estimate_matches_saved_tensors(shape, targets, rank):
    h, inter, heads, kv = shape
    arch = ModelArch(hidden_size=h, intermediate_size=inter, num_hidden_layers=1, num_attention_heads=heads,
                     num_key_value_heads=kv, vocab_size=64)
    # no targets: no adapters, every weight trains (full fine-tuning)
    measured = activation_bytes_per_layer_token(lora_builder(list(targets), rank or 8), h, inter, heads, kv,
                                                tokens=128, batch=2)
    method = "lora" if targets else "full"
    estimated = activation_bytes_per_token_per_layer(arch, method, 128, True, tuple(targets), rank)
    assert estimated == pytest.approx(measured, rel=0.05)


@pytest.mark.parametrize("targets", [LINEAR_MODULES, ("q_proj", "v_proj")])
def test_qlora_activation_estimate(targets):
    pytest.importorskip("bitsandbytes")
    h, inter, heads, kv = 288, 768, 6, 3  # not among the fitted shapes
    arch = ModelArch(hidden_size=h, intermediate_size=inter, num_hidden_layers=1, num_attention_heads=heads,
                     num_key_value_heads=kv, vocab_size=64)
    measured = activation_bytes_per_layer_token(qlora_builder(targets), h, inter, heads, kv, tokens=128, batch=2)
    estimated = activation_bytes_per_token_per_layer(arch, "qlora", 128, True, tuple(targets), 8)
    assert estimated == pytest.approx(measured, rel=0.05)
