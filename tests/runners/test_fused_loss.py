"""The fused LM head + cross-entropy (runners.loss) gives transformers' loss and gradients, for every model type it is
enabled on, and falls back to the stock forward everywhere else."""

import copy

import pytest
import torch

from advisor.formulas.fused_loss import FUSED_LOSS_MODEL_TYPES, fused_loss_applies, loss_chunk_tokens
from runners.loss import linear_cross_entropy, supports_fused_loss, use_fused_loss


def stock_loss(hidden, weight, labels, num_items):
    from transformers.loss.loss_utils import ForCausalLMLoss
    return ForCausalLMLoss(hidden @ weight.T, labels, weight.shape[0], num_items_in_batch=num_items)


@pytest.mark.parametrize("chunk", [1, 3, 7, None])
@pytest.mark.parametrize("num_items", [None, 23])
def test_function_matches_stock_loss_and_gradient(chunk, num_items):
    torch.manual_seed(0)
    hidden = torch.randn(3, 11, 16, requires_grad=True)
    weight = torch.randn(50, 16)
    labels = torch.randint(0, 50, (3, 11))
    labels[0, :4] = -100   # a masked prompt
    labels[2, 6:] = -100   # padding
    ours = linear_cross_entropy(hidden, weight, labels, num_items, chunk=chunk)
    theirs = stock_loss(hidden, weight, labels, num_items)
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-6)  # fp32 sums in another order
    g_ours, = torch.autograd.grad(ours * 3.0, hidden)  # a non-unit upstream gradient is applied too
    g_theirs, = torch.autograd.grad(theirs * 3.0, hidden)
    assert torch.allclose(g_ours, g_theirs, rtol=1e-5, atol=1e-7)


def test_no_counted_token_gives_zero_loss_and_gradient():
    hidden = torch.randn(1, 5, 8, requires_grad=True)
    labels = torch.full((1, 5), -100)
    loss = linear_cross_entropy(hidden, torch.randn(20, 8), labels, num_items_in_batch=7)
    loss.backward()
    assert loss.item() == 0.0 and torch.count_nonzero(hidden.grad) == 0


def test_without_gradients_the_loss_is_the_same():
    torch.manual_seed(1)
    hidden, weight, labels = torch.randn(2, 9, 8), torch.randn(30, 8), torch.randint(0, 30, (2, 9))
    with torch.no_grad():
        assert linear_cross_entropy(hidden, weight, labels, chunk=4).item() == pytest.approx(
            stock_loss(hidden, weight, labels, None).item(), rel=1e-6)


def test_chunks_bound_the_logits_whatever_the_batch():
    assert loss_chunk_tokens(100) == 100
    assert loss_chunk_tokens(2048) == loss_chunk_tokens(16 * 2048) == 1024


def tiny_config(model_type: str, vocab: int = 300):
    from transformers import AutoConfig
    return AutoConfig.for_model(model_type, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                num_attention_heads=4, num_key_value_heads=2, vocab_size=vocab, head_dim=16,
                                tie_word_embeddings=False, use_cache=False)


def lora_pair(model_type: str, dtype=torch.float32, targets="all-linear"):
    """The same LoRA model twice (adapters non-zero so their gradients are not trivial); the second fused."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_config(tiny_config(model_type)).to(dtype)
    models = []
    for _ in range(2):
        torch.manual_seed(1)
        model = get_peft_model(copy.deepcopy(base), LoraConfig(r=4, lora_alpha=8, target_modules=targets))
        for name, p in model.named_parameters():
            if "lora_B" in name:
                torch.nn.init.normal_(p, std=0.05)
        models.append(model.train())
    return models


def packed_batch(vocab: int = 300):
    torch.manual_seed(2)
    ids = torch.randint(0, vocab, (2, 40))
    labels = ids.clone()
    labels[:, :5] = -100
    positions = torch.cat([torch.arange(25), torch.arange(15)]).repeat(2, 1)  # two packed documents per row
    return {"input_ids": ids, "labels": labels, "position_ids": positions}


@pytest.mark.parametrize("model_type", FUSED_LOSS_MODEL_TYPES)
@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16-autocast"])
def test_models_train_the_same_fused(model_type, autocast):
    stock, fused = lora_pair(model_type, torch.bfloat16 if autocast else torch.float32)
    assert supports_fused_loss(fused.get_base_model()) is None
    use_fused_loss(fused.get_base_model())
    batch = packed_batch()
    results = []
    for model in (stock, fused):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = model(**batch, num_items_in_batch=61, use_cache=False)
        out.loss.backward()
        results.append((out.loss.item(), {n: p.grad for n, p in model.named_parameters() if p.requires_grad}))
    (loss_s, grads_s), (loss_f, grads_f) = results
    tol = 1e-2 if autocast else 1e-5
    assert loss_f == pytest.approx(loss_s, rel=tol / 10)
    assert grads_s.keys() == grads_f.keys() and len(grads_s) > 0
    for name in grads_s:
        scale = grads_s[name].abs().max()
        assert (grads_f[name] - grads_s[name]).abs().max() <= tol * scale, name


def test_calls_without_labels_keep_the_stock_forward():
    stock, fused = lora_pair("llama")
    use_fused_loss(fused.get_base_model())
    ids = packed_batch()["input_ids"]
    with torch.no_grad():
        assert torch.allclose(stock(input_ids=ids).logits, fused(input_ids=ids).logits)


def test_unsupported_models_say_why_and_the_estimate_agrees():
    from transformers import AutoModelForCausalLM
    gemma = AutoModelForCausalLM.from_config(tiny_config("gemma2"))
    assert "gemma2" in supports_fused_loss(gemma)
    _, head_adapted = lora_pair("llama", targets=["q_proj", "lm_head"])
    assert "not a plain" in supports_fused_loss(head_adapted.get_base_model())
    full = AutoModelForCausalLM.from_config(tiny_config("llama"))
    assert "trained" in supports_fused_loss(full)

    from advisor.catalog.types import ModelArch
    from advisor.catalog.load import get_model
    llama = get_model("Llama-3.1-8B")
    assert fused_loss_applies(llama, "lora", ("q_proj",))
    assert not fused_loss_applies(llama, "lora", ("q_proj",), requested=False)
    assert not fused_loss_applies(llama, "full", ())
    assert not fused_loss_applies(llama, "lora", ("q_proj", "lm_head"))
    assert not fused_loss_applies(ModelArch(model_type="gemma2", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                            num_attention_heads=4, num_key_value_heads=2, vocab_size=300), "lora", ())


def test_the_runner_fuses_by_default_and_can_be_told_not_to(tmp_path):
    from advisor.plan.recipe import load_recipe
    from runners.model import attach_adapters, load_model
    recipe = load_recipe("recipes/tiny-cpu-lora.yaml")
    for flag in (True, False):
        r = recipe.model_copy(update={"train": recipe.train.model_copy(update={"fused_loss": flag})})
        model = attach_adapters(load_model(r, torch.device("cpu"), tmp_path, 0), r, False)
        assert ("forward" in vars(model.get_base_model())) == flag
