"""The memory estimate's step-dependent part (activations + logits + gradients) against the live-bytes peak of
real training steps on the CPU, bf16 autocast, for LoRA, QLoRA and full fine-tuning, with and without checkpointing."""

import pytest
import torch

from advisor.catalog.types import ModelArch
from advisor.formulas.memory import memory_per_gpu
from advisor.formulas.setup import TrainingSetup
from bench.measure import lora_builder, qlora_builder, step_peak_bytes

CASES = [  # hidden, MLP, layers, heads, kv heads, vocab, tokens, batch, method, checkpointing
    (256, 704, 4, 8, 2, 4096, 512, 2, "lora", False),
    (256, 704, 4, 8, 2, 32000, 256, 2, "lora", False),
    (384, 1024, 6, 6, 2, 8192, 256, 4, "lora", False),
    (256, 704, 4, 8, 2, 4096, 512, 2, "lora", True),
    (512, 1408, 4, 8, 2, 2048, 512, 2, "lora", True),
    (384, 1024, 4, 6, 2, 64, 256, 4, "lora", True),     # a tiny vocabulary: the recompute phase sets the peak
    (384, 1024, 4, 6, 2, 64, 256, 4, "lora", False),
    (256, 704, 4, 8, 2, 8192, 256, 2, "qlora", False),
    (256, 704, 4, 8, 2, 8192, 256, 2, "full", False),
]
FUSED = [  # the runner's fused LM head + loss (runners.loss): a large vocabulary no longer sets the peak
    (256, 704, 4, 8, 2, 32000, 512, 2, "lora", False),
    (256, 704, 4, 8, 2, 32000, 512, 2, "lora", True),
    (128, 352, 2, 4, 2, 32000, 1024, 3, "lora", False),  # three chunks: one chunk's buffers alive at a time
    (384, 1024, 6, 6, 2, 8192, 256, 4, "lora", False),
    (256, 704, 4, 8, 2, 32000, 256, 2, "qlora", False),
]


@pytest.mark.parametrize("case", [c + (False,) for c in CASES] + [c + (True,) for c in FUSED],
                         ids=lambda c: f"{c[8]}-h{c[0]}-V{c[5]}-T{c[6]}{'-ckpt' if c[9] else ''}{'-fused' if c[10] else ''}")
def test_step_peak_matches_estimate(case):
    from transformers import LlamaConfig
    h, inter, layers, heads, kv, vocab, tokens, batch, method, checkpointing, fused = case
    config = LlamaConfig(hidden_size=h, intermediate_size=inter, num_hidden_layers=layers, num_attention_heads=heads,
                         num_key_value_heads=kv, vocab_size=vocab, use_cache=False)
    torch.manual_seed(0)
    targets = () if method == "full" else ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    model = (qlora_builder(targets, rank=16) if method == "qlora" else lora_builder(targets, rank=16))(config)
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if fused:
        from runners.loss import use_fused_loss
        use_fused_loss(model.get_base_model())
    measured = step_peak_bytes(model, torch.randint(0, vocab, (batch, tokens)))
    arch = ModelArch(hidden_size=h, intermediate_size=inter, num_hidden_layers=layers, num_attention_heads=heads,
                     num_key_value_heads=kv, vocab_size=vocab)
    m = memory_per_gpu(TrainingSetup(arch=arch, method=method, lora_rank=16, seq_len=tokens, micro_batch=batch,
                                     gradient_checkpointing=checkpointing, fused_loss=fused))
    estimated = (m.activations + m.logits + m.gradients) * 2**30
    if method == "full":  # weight gradients build up as activations are freed: the sum is an upper bound
        assert measured <= estimated <= 1.25 * measured
    else:
        assert estimated == pytest.approx(measured, rel=0.05)


def bytes_per_vocab_entry(vocabs: tuple[int, int], fused: bool) -> float:
    """The slope of a step's peak over the vocabulary, per position (2 x 256): everything else cancels."""
    from transformers import LlamaConfig

    from runners.loss import use_fused_loss
    peaks = []
    for vocab in vocabs:
        torch.manual_seed(0)
        config = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=4,
                             num_key_value_heads=2, vocab_size=vocab, use_cache=False)
        model = lora_builder(("q_proj",), rank=8)(config)
        if fused:
            use_fused_loss(model.get_base_model())
        peaks.append(step_peak_bytes(model, torch.randint(0, 4096, (2, 256))))
    return (peaks[1] - peaks[0]) / (2 * 256 * (vocabs[1] - vocabs[0]))


def test_logits_cost_14_bytes_each():
    from advisor.formulas.memory import LOGITS_BYTES_PER_ELEMENT
    assert bytes_per_vocab_entry((4096, 16384), fused=False) == pytest.approx(LOGITS_BYTES_PER_ELEMENT, rel=0.01)


def test_fused_loss_costs_6_bytes_per_chunk_logit():
    """All 512 positions are one chunk, so the slope is the bytes per chunk logit."""
    from advisor.formulas.memory import FUSED_LOSS_BYTES_PER_ELEMENT
    assert bytes_per_vocab_entry((16384, 65536), fused=True) == pytest.approx(FUSED_LOSS_BYTES_PER_ELEMENT, rel=0.05)


def test_eager_chunked_loss_keeps_every_chunks_log_softmax():
    """torchtune's CEWithChunkedOutputLoss, eager: cross_entropy(chunk.float()) keeps each chunk's fp32 log-softmax
    for backward, so the saved bytes per logit are CHUNKED_SAVED_BYTES_PER_ELEMENT, not one chunk's share."""
    import torch.nn.functional as F

    from advisor.formulas.memory import CHUNKED_SAVED_BYTES_PER_ELEMENT
    tokens, vocab, hidden = 1024, 8192, 64
    states = torch.randn(tokens, hidden, dtype=torch.bfloat16, requires_grad=True)
    head = torch.randn(vocab, hidden, dtype=torch.bfloat16) * 0.02
    labels = torch.randint(0, vocab, (tokens,))
    saved: dict[int, int] = {}

    def pack(t):
        saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        chunks = [F.linear(c, head) for c in states.chunk(8)]
        sum(F.cross_entropy(c.float(), y, reduction="sum") for c, y in zip(chunks, labels.chunk(8))).backward()
    per_logit = (sum(saved.values()) - states.numel() * 2 - head.numel() * 2) / (tokens * vocab)
    assert per_logit == pytest.approx(CHUNKED_SAVED_BYTES_PER_ELEMENT, rel=0.05)
