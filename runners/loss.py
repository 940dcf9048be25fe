"""The LM head and the cross-entropy fused, chunk by chunk, so a step never holds the logits of the whole micro-batch.

Transformers' causal LMs compute `lm_head(hidden)` for every position, then `cross_entropy(logits.float())`: with a
128k vocabulary that is B x T x V x 14 bytes at the loss (3.7 GB per 2048 tokens for Llama-3.1-8B), more than all
32 layers keep with gradient checkpointing. Here the head's matmul, the log-sum-exp and the gradient with respect to
the hidden states are computed chunk by chunk in the forward pass: the approach of Liger Kernel's fused linear
cross-entropy (Hsu et al. 2024, arXiv:2410.10989), in plain PyTorch so it runs on any device, with the chunk size
of advisor.formulas.fused_loss.loss_chunk_tokens. Backward only rescales the stored gradient. Positions whose label is ignored
(prompt tokens, padding) skip the head entirely. The arithmetic is the stock path's: logits in the compute dtype,
upcast to fp32 for the softmax, the gradient cast back to the compute dtype before its matmul.

Only a frozen, bias-free head on a model whose forward is the plain `lm_head(model(...).last_hidden_state)` is
fused (advisor.formulas.fused_loss.FUSED_LOSS_MODEL_TYPES, each checked against the stock loss and gradients in
tests/runners/test_fused_loss.py); anything else keeps transformers' own forward.
"""

import types

import torch

from advisor.formulas.fused_loss import FUSED_LOSS_MODEL_TYPES, loss_chunk_tokens
from runners.examples import IGNORE_INDEX


class _LinearCrossEntropy(torch.autograd.Function):
    """sum over rows of CE(hidden @ weight.T, targets) x scale; the gradient wrt hidden is computed in forward."""

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, scale: float, chunk: int):
        total, grad = _chunked(hidden, weight, targets, scale, chunk, with_grad=True)
        ctx.save_for_backward(grad)
        return total

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        (grad,) = ctx.saved_tensors
        return grad * grad_output.to(grad.dtype), None, None, None, None


def _chunked(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, scale: float, chunk: int,
             with_grad: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(scaled summed loss, d loss / d hidden or None); hidden is (N, h) and every target is a real token."""
    total = torch.zeros((), dtype=torch.float32, device=hidden.device)
    grad = torch.empty_like(hidden) if with_grad else None
    rows = torch.arange(min(chunk, hidden.shape[0]), device=hidden.device)
    for start in range(0, hidden.shape[0], chunk):
        h, t = hidden[start:start + chunk], targets[start:start + chunk]
        logits = (h @ weight.T).float()  # the head's output in the compute dtype, upcast as ForCausalLMLoss does
        lse = torch.logsumexp(logits, dim=-1)
        r = rows[:h.shape[0]]
        total += (lse - logits[r, t]).sum()
        if grad is not None:  # softmax - one_hot, scaled, in the fp32 logits' own memory
            logits.sub_(lse.unsqueeze(1)).exp_()
            logits[r, t] -= 1.0
            logits.mul_(scale)
            grad[start:start + chunk] = logits.to(h.dtype) @ weight
        del logits, lse  # before the next chunk allocates its own: one chunk's buffers alive at a time
    return total * scale, grad


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
                         num_items_in_batch: int | torch.Tensor | None = None, chunk: int | None = None) -> torch.Tensor:
    """Causal-LM loss of `hidden` (B, T, h) through a frozen head `weight` (V, h) against `labels` (B, T), shifted
    as transformers does (position t predicts label t+1; -100 is ignored). Sum / num_items_in_batch when given,
    else the mean over counted tokens: the same value and gradient as ForCausalLMLoss(lm_head(hidden), labels)."""
    targets = torch.nn.functional.pad(labels, (0, 1), value=IGNORE_INDEX)[..., 1:].reshape(-1)
    keep = (targets != IGNORE_INDEX).nonzero().squeeze(1)
    flat = hidden.reshape(-1, hidden.shape[-1])
    # the head runs in autocast's dtype when autocast is on (as nn.Linear would), else in the hidden states' dtype
    device = hidden.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else hidden.dtype
    denominator = float(num_items_in_batch) if num_items_in_batch is not None else float(max(1, keep.numel()))
    chunk = chunk or loss_chunk_tokens(keep.numel())
    with torch.autocast(device, enabled=False):
        selected = flat.index_select(0, keep).to(dtype)
        w = weight.to(dtype)
        kept_targets = targets.index_select(0, keep)
        if torch.is_grad_enabled() and hidden.requires_grad:
            loss = _LinearCrossEntropy.apply(selected, w, kept_targets, 1.0 / denominator, chunk)
        else:
            loss = _chunked(selected, w, kept_targets, 1.0 / denominator, chunk, with_grad=False)[0]
    return loss


def supports_fused_loss(causal_lm) -> str | None:
    """None if the model's loss can be fused, else why not (one short phrase)."""
    config = causal_lm.config
    head = causal_lm.get_output_embeddings()
    if config.model_type not in FUSED_LOSS_MODEL_TYPES:
        return f"model type {config.model_type!r} is not among {', '.join(FUSED_LOSS_MODEL_TYPES)}"
    if type(head) is not torch.nn.Linear or head.bias is not None:
        return "its LM head is not a plain bias-free linear layer (adapted or replaced)"
    if head.weight.requires_grad:
        return "its LM head is trained"
    return None


def use_fused_loss(causal_lm, chunk: int | None = None) -> None:
    """Make this model instance (not its class) compute its training loss with `linear_cross_entropy` (chunks of
    `chunk` positions, default loss_chunk_tokens); calls without labels (generation, logits wanted) keep the stock
    forward."""
    from transformers.modeling_outputs import CausalLMOutputWithPast
    stock = type(causal_lm).forward

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, labels=None, num_items_in_batch=None,
                use_cache=None, **kwargs):
        if labels is None:
            return stock(self, input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         use_cache=use_cache, **kwargs)
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                            use_cache=False, **kwargs).last_hidden_state
        loss = linear_cross_entropy(hidden, self.get_output_embeddings().weight, labels, num_items_in_batch, chunk)
        return CausalLMOutputWithPast(loss=loss, logits=None)

    causal_lm.forward = types.MethodType(forward, causal_lm)
