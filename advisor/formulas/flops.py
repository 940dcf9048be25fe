"""FLOPs per token, GPU-hours, dollars and utilisation: turning a setup's work into time and money.

Conventions: FLOPs count a multiply-add as 2; "model" FLOPs are what MFU counts (forward + backward), "executed"
FLOPs add what the GPU also runs (recomputation).
"""

from msgspec import Struct
from msgspec.structs import asdict

from advisor.catalog.types import ModelArch
from advisor.core.errors import AdvisorError
from advisor.catalog.arch import describe
from advisor.formulas.params import layer_matmul_params, matmul_params
from advisor.formulas.setup import Method

# Achieved fraction of dense bf16 peak (hardware FLOPs utilisation) assumed when no calibration is given.
# Full fine-tuning: large-scale bf16 training reaches 38-46% MFU (PaLM: 46.2%, Chowdhery et al. 2022 Table 3;
# Llama 3 405B: 38-43%, Dubey et al. 2024 Table 4); a single-node fine-tune is taken a little lower.
# LoRA: the frozen base skips weight gradients, leaving more small and memory-bound kernels per FLOP.
# QLoRA: every forward and backward matmul first dequantises NF4 weights (Dettmers et al. 2023 §4 reports
# QLoRA slower than 16-bit LoRA), so a lower fraction. These are assumptions until `advisor calibrate`
# replaces them with fractions measured on your GPUs. `advisor estimate` no longer uses them: its time comes from the
# step-time model (advisor.formulas.step_time), fitted to published measurements, which puts these about 45% off
# (docs/accuracy.md, "before"); `advisor recommend` (advisor.decide.costing) still prices with them.
DEFAULT_EFFICIENCY: dict[str, float] = {"full": 0.40, "lora": 0.35, "qlora": 0.25}


class FlopsPerToken(Struct, frozen=True):
    forward: float
    backward: float
    recompute: float   # gradient checkpointing: one more forward of the decoder layers
    model: float       # forward + backward: what MFU counts (PaLM Appendix B)
    total: float       # model + recompute, in PaLM's counting (full-context attention); the executed FLOPs of a
                       # step (causal attention, FlashAttention-2's backward) are advisor.formulas.step_time's
    experts: float = 0.0  # of total: a MoE's routed experts (top-k per token), forward + backward + recompute

    def as_dict(self) -> dict:
        return asdict(self)


def flops_per_token(arch: ModelArch, seq_len: int, method: Method, lora_params: int = 0,
                    gradient_checkpointing: bool = False) -> FlopsPerToken:
    """Training FLOPs per token, attention included.

    Forward: 2 N_mm (every matmul weight) + 4 L T d_attn (QK^T and AV over a T-token context; PaLM,
    Chowdhery et al. 2022 Appendix B, whose 6N + 12 L H Q T is forward + backward for full training), L T being
    attended_keys (a sliding-window layer attends to its window only).
    Backward: full fine-tune 2x forward (gradients for activations and weights). LoRA and QLoRA freeze the
    base, so the base matmuls need activation gradients only (2 N_mm), attention still 2x its forward, and
    the adapters cost 2 N_lora forward + 4 N_lora backward. QLoRA executes the same matmuls as LoRA (its
    dequantisation shows up as lower efficiency, not more FLOPs).
    Gradient checkpointing re-runs each decoder layer's forward before its backward (Chen et al. 2016).
    """
    n_mm = matmul_params(arch)  # per token: a MoE's router and top-k experts, not all of them
    n_layers_mm = layer_matmul_params(arch)
    attn_fwd = 4.0 * attended_keys(arch, seq_len, causal=False) * arch.attention_width
    adapters = lora_params if method in ("lora", "qlora") else 0
    forward = 2.0 * n_mm + attn_fwd + 2.0 * adapters
    if method == "full":
        backward = 2.0 * forward
    else:
        backward = 2.0 * n_mm + 2.0 * attn_fwd + 4.0 * adapters
    recompute = (2.0 * n_layers_mm + attn_fwd + 2.0 * adapters) if gradient_checkpointing else 0.0
    return FlopsPerToken(forward, backward, recompute, forward + backward, forward + backward + recompute,
                         expert_matmul_flops_per_token(arch, method, gradient_checkpointing))


def expert_matmul_flops_per_token(arch: ModelArch, method: str, checkpointing: bool) -> float:
    """Executed FLOPs per token of a MoE's routed experts: each token runs its top-k experts' three projections
    (k x 3 h I weights per MoE layer; Fedus et al. 2022 §2, Jiang et al. 2024 §2), 2 FLOPs per weight forward; backward
    4 per weight when they train (full fine-tuning), 2 when frozen (LoRA/QLoRA: activation gradients only; adapters on
    the experts are in dense_matmul_flops_per_token's adapter term); checkpointing re-runs their forward. 0 for a
    dense model."""
    n = sum(layer.experts.per_token * layer.experts.weights_per_expert
            for layer in describe(arch).layers if layer.experts)
    return n * (2.0 + (4.0 if method == "full" else 2.0) + (2.0 if checkpointing else 0.0))


# Linear-attention layers (Qwen3.5's gated DeltaNet) compute the chunked delta rule: a quadratic form within chunks of
# 64 tokens and a d_k x d_v state carried between them (Yang et al. 2024, Gated Delta Networks §3; fla's chunk size),
# so their work per token is that of attention over a window of one chunk, whatever the sequence length.
LINEAR_ATTENTION_CHUNK = 64


def attended_keys(arch: ModelArch, seq_len: float, causal: bool, windowed: bool = True) -> float:
    """Keys one query attends to, summed over the decoder layers, in a sequence of `seq_len` tokens.

    Full-context counting (causal False, PaLM's convention, Chowdhery et al. 2022 Appendix B): T per full-attention
    layer. Causal (what a causal kernel computes, on average over the sequence's positions): T / 2. A sliding-window
    layer of window w < T (Mistral, Gemma 2/3, gpt-oss; Beltagy et al. 2020) sees min(t, w) keys at position t,
    on average w - w^2 / 2T causally, twice that in full-context counting; `windowed` False counts every layer as
    full (a kernel that masks the window instead of skipping it computes the whole T x T). A linear-attention layer
    counts as a window of LINEAR_ATTENTION_CHUNK.
    """
    total = 0.0
    for layer in describe(arch).layers:
        w = layer.sliding_window if windowed else None
        if layer.linear_attention:  # no T x T scores: counted as a window of one chunk, causal or not
            w = LINEAR_ATTENTION_CHUNK
        mean = seq_len / 2.0 if w is None or w >= seq_len else w - w * w / (2.0 * seq_len)
        total += mean if causal else 2.0 * mean
    return total


def training_flops(flops_per_token_total: float, tokens: float) -> float:
    """Total FLOPs executed: FLOPs per token x tokens trained on."""
    return flops_per_token_total * tokens


def gpu_hours(total_flops: float, peak_flops_per_gpu: float, efficiency: float) -> float:
    """GPU-hours = FLOPs / (peak FLOP/s x achieved fraction) / 3600 s (Narayanan et al. 2021 §5.1 uses the same
    relation to predict end-to-end training time)."""
    if not 0 < efficiency <= 1:
        raise AdvisorError(f"efficiency must be in (0, 1], got {efficiency}")
    return total_flops / (peak_flops_per_gpu * efficiency) / 3600.0


def gpu_hours_at_rate(tokens: float, tokens_per_second_per_gpu: float) -> float:
    """GPU-hours = tokens / (tokens/s per GPU) / 3600 s: the time every GPU is held, whatever FLOP counting gave the
    rate."""
    return tokens / tokens_per_second_per_gpu / 3600.0


def cost_usd(hours: float, price_usd_per_gpu_hour: float) -> float:
    """Dollars = GPU-hours x price per GPU-hour."""
    return hours * price_usd_per_gpu_hour


def flops_utilization(flops: float, wall_seconds: float, gpus: int, peak_flops_per_gpu: float) -> float:
    """FLOPs / (wall time x GPUs x peak). With model FLOPs it is MFU (Chowdhery et al. 2022, PaLM Appendix B);
    with executed FLOPs (recompute included) the achieved efficiency that gpu_hours divides by."""
    return flops / (wall_seconds * gpus * peak_flops_per_gpu)
