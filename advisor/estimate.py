"""Estimators: parameters, LoRA parameters, FLOPs per token, memory per GPU, GPU count, GPU-hours, dollars.

One formula per function, each the single source the runner reuses (its MFU calls `flops_per_token`).
Conventions: bytes are bytes, `*_gib` are GiB (2^30), FLOPs count a multiply-add as 2.
"""

import math
from dataclasses import asdict, dataclass, replace
from typing import Literal

from advisor.catalog import Gpu, ModelArch
from advisor.errors import AdvisorError

Method = Literal["full", "lora", "qlora"]
Optimizer = Literal["adamw", "adamw-8bit", "paged-adamw-8bit"]
Sharding = Literal["auto", "ddp", "fsdp"]
METHODS = ("lora", "qlora", "full")

ATTENTION_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_MODULES = ("gate_proj", "up_proj", "down_proj")
LINEAR_MODULES = ATTENTION_MODULES + MLP_MODULES
GIB = 2**30

# Achieved fraction of dense bf16 peak (hardware FLOPs utilisation) assumed when no calibration is given.
# Full fine-tuning: large-scale bf16 training reaches 38-46% MFU (PaLM: 46.2%, Chowdhery et al. 2022 Table 3;
# Llama 3 405B: 38-43%, Dubey et al. 2024 Table 4); a single-node fine-tune is taken a little lower.
# LoRA: the frozen base skips weight gradients, leaving more small and memory-bound kernels per FLOP.
# QLoRA: every forward and backward matmul first dequantises NF4 weights (Dettmers et al. 2023 §4 reports
# QLoRA slower than 16-bit LoRA), so a lower fraction. These are assumptions until `advisor calibrate`
# replaces them with fractions measured on your GPUs.
DEFAULT_EFFICIENCY: dict[str, float] = {"full": 0.40, "lora": 0.35, "qlora": 0.25}
# Memory the estimate cannot see term by term: the caching allocator's fragmentation and cuBLAS/NCCL
# workspaces, as a fraction of everything else plus a fixed part. Assumed until calibrated.
DEFAULT_OVERHEAD_FRACTION = 0.05
DEFAULT_OVERHEAD_FIXED_GIB = 0.3


@dataclass(frozen=True)
class LinearShape:
    in_features: int
    out_features: int
    bias: bool

    @property
    def params(self) -> int:
        return self.in_features * self.out_features + (self.out_features if self.bias else 0)


def layer_linear_shapes(arch: ModelArch) -> dict[str, LinearShape]:
    """The seven projections of one Llama-family decoder layer (Llama, Mistral, Qwen2), as transformers builds them."""
    h, hd = arch.hidden_size, arch.head_dim_resolved
    q_out, kv_out = arch.num_attention_heads * hd, arch.kv_heads * hd
    return {
        "q_proj": LinearShape(h, q_out, arch.qkv_bias),
        "k_proj": LinearShape(h, kv_out, arch.qkv_bias),
        "v_proj": LinearShape(h, kv_out, arch.qkv_bias),
        "o_proj": LinearShape(q_out, h, arch.o_bias),
        "gate_proj": LinearShape(h, arch.intermediate_size, arch.mlp_bias),
        "up_proj": LinearShape(h, arch.intermediate_size, arch.mlp_bias),
        "down_proj": LinearShape(arch.intermediate_size, h, arch.mlp_bias),
    }


@dataclass(frozen=True)
class ParamCounts:
    total: int
    embedding: int      # token embedding table
    lm_head: int        # 0 when tied to the embedding
    layers: int         # all decoder layers (linears, biases, norms)
    linear_weights: int  # decoder-layer projection weights only: what NF4 quantises
    norms: int          # RMSNorm weights, layers and final


def param_counts(arch: ModelArch) -> ParamCounts:
    """Exact parameter count of a Llama-family decoder (tied or untied embeddings), to the parameter.

    Per layer: the seven projections (with any biases) and two RMSNorm weights; plus the embedding,
    the final norm and, when untied, the LM head. Checked against transformers' own modules in the tests.
    """
    shapes = layer_linear_shapes(arch)
    linear = sum(s.params for s in shapes.values())
    weights = sum(s.in_features * s.out_features for s in shapes.values())
    per_layer = linear + 2 * arch.hidden_size
    embedding = arch.vocab_size * arch.hidden_size
    lm_head = 0 if arch.tie_word_embeddings else embedding
    layers = arch.num_hidden_layers * per_layer
    norms = arch.num_hidden_layers * 2 * arch.hidden_size + arch.hidden_size
    return ParamCounts(
        total=embedding + lm_head + layers + arch.hidden_size,
        embedding=embedding, lm_head=lm_head, layers=layers,
        linear_weights=arch.num_hidden_layers * weights, norms=norms,
    )


def resolve_lora_targets(targets: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """`all-linear` (peft's shorthand: every projection, not the LM head) or a list of projection names."""
    names = [t.strip() for t in targets.split(",")] if isinstance(targets, str) else [str(t).strip() for t in targets]
    if names == ["all-linear"]:
        return LINEAR_MODULES
    unknown = [n or "(empty)" for n in names if n not in LINEAR_MODULES]
    if unknown or not names:
        raise AdvisorError(f"unknown LoRA target {', '.join(unknown) or '(empty)'!r}; expected all-linear or a "
                           f"comma list of {','.join(LINEAR_MODULES)}")
    return tuple(dict.fromkeys(names))


def lora_trainable_params(arch: ModelArch, rank: int, targets) -> int:
    """Parameters LoRA trains: r (in + out) per targeted projection per layer (A is r x in, B is out x r).

    Source: Hu et al. 2021, LoRA §4.1; equals peft's count with bias="none" (checked in the tests).
    """
    shapes = layer_linear_shapes(arch)
    per_layer = sum(rank * (shapes[t].in_features + shapes[t].out_features) for t in resolve_lora_targets(targets))
    return arch.num_hidden_layers * per_layer


def matmul_params(arch: ModelArch) -> int:
    """Weights that take part in a matmul per token: every projection and the LM head (tied or not).

    The embedding lookup is a gather, not a matmul, and norms/biases are negligible (Kaplan et al. 2020 §2.1).
    """
    return param_counts(arch).linear_weights + arch.vocab_size * arch.hidden_size


@dataclass(frozen=True)
class FlopsPerToken:
    forward: float
    backward: float
    recompute: float   # gradient checkpointing: one more forward of the decoder layers
    model: float       # forward + backward: what MFU counts (PaLM Appendix B)
    total: float       # model + recompute: what the GPU executes

    def as_dict(self) -> dict:
        return asdict(self)


def flops_per_token(arch: ModelArch, seq_len: int, method: Method, lora_params: int = 0,
                    gradient_checkpointing: bool = False) -> FlopsPerToken:
    """Training FLOPs per token, attention included.

    Forward: 2 N_mm (every matmul weight) + 4 L T d_attn (QK^T and AV over a T-token context; PaLM,
    Chowdhery et al. 2022 Appendix B, whose 6N + 12 L H Q T is forward + backward for full training).
    Backward: full fine-tune 2x forward (gradients for activations and weights). LoRA and QLoRA freeze the
    base, so the base matmuls need activation gradients only (2 N_mm), attention still 2x its forward, and
    the adapters cost 2 N_lora forward + 4 N_lora backward. QLoRA executes the same matmuls as LoRA (its
    dequantisation shows up as lower efficiency, not more FLOPs).
    Gradient checkpointing re-runs each decoder layer's forward before its backward (Chen et al. 2016).
    """
    counts = param_counts(arch)
    n_mm = matmul_params(arch)
    n_layers_mm = counts.linear_weights
    attn_fwd = 4.0 * arch.num_hidden_layers * seq_len * arch.num_attention_heads * arch.head_dim_resolved
    adapters = lora_params if method in ("lora", "qlora") else 0
    forward = 2.0 * n_mm + attn_fwd + 2.0 * adapters
    if method == "full":
        backward = 2.0 * forward
    else:
        backward = 2.0 * n_mm + 2.0 * attn_fwd + 4.0 * adapters
    recompute = (2.0 * n_layers_mm + attn_fwd + 2.0 * adapters) if gradient_checkpointing else 0.0
    return FlopsPerToken(forward, backward, recompute, forward + backward, forward + backward + recompute)


# --- memory -----------------------------------------------------------------------------------------

# NF4 stores 4 bits per weight. Per block of 64 weights it keeps an absmax constant: fp32 (32/64 = 0.5 bit
# per weight) or, with double quantisation, an 8-bit constant plus one fp32 per 256 blocks
# (8/64 + 32/(64*256) = 0.127 bit). Source: Dettmers et al. 2023, QLoRA §3 "Double Quantization".
NF4_BLOCK = 64
NF4_NESTED_BLOCK = 256


def nf4_bytes_per_param(double_quant: bool) -> float:
    """Bytes per NF4-quantised weight, constants included (Dettmers et al. 2023, QLoRA §3)."""
    constants_bits = (8 / NF4_BLOCK + 32 / (NF4_BLOCK * NF4_NESTED_BLOCK)) if double_quant else 32 / NF4_BLOCK
    return (4 + constants_bits) / 8


def weight_bytes(arch: ModelArch, method: Method, double_quant: bool = True) -> float:
    """Bytes of the model's own weights on one unsharded replica.

    full / lora: every parameter in bf16 (2 bytes). qlora: the decoder projections in NF4; embeddings,
    norms, biases and the LM head stay unquantised, as bitsandbytes does through transformers (its
    get_keys_to_not_convert keeps the output embedding), and peft's prepare_model_for_kbit_training casts
    those remaining 16-bit parameters to fp32 (4 bytes) for stability.
    """
    counts = param_counts(arch)
    if method != "qlora":
        return 2.0 * counts.total
    rest = counts.total - counts.linear_weights
    return counts.linear_weights * nf4_bytes_per_param(double_quant) + 4.0 * rest


# bitsandbytes' 8-bit optimizers keep 32-bit state for tensors under 4096 elements (Optimizer8bit's
# min_8bit_size) and, per block of 256 elements, two fp32 absmax scales (Optimizer2State.init_state).
BNB_MIN_8BIT_SIZE = 4096
BNB_OPTIM_BLOCK = 256


def optimizer_state_bytes(tensor_numels, optimizer: Optimizer, master_copy: bool) -> float:
    """Optimizer state for trainable tensors of these sizes. AdamW keeps two fp32 moments (8 bytes per element);
    8-bit AdamW keeps them in 8 bits (2 bytes) plus block scales (Dettmers et al. 2022, 8-bit Optimizers via
    Block-wise Quantization), except for small tensors. Mixed-precision full training also keeps an fp32 master
    copy of the weights (4 bytes; Micikevicius et al. 2018; ZeRO, Rajbhandari et al. 2020 §3.1: K = 12)."""
    total = 0.0
    for n in tensor_numels:
        if optimizer == "adamw" or n < BNB_MIN_8BIT_SIZE:
            total += 8.0 * n
        else:
            total += 2.0 * n + 2 * 4.0 * math.ceil(n / BNB_OPTIM_BLOCK)
        total += 4.0 * n if master_copy else 0.0
    return total


def trainable_tensor_numels(setup: "TrainingSetup") -> list[int]:
    """Element counts of each trainable tensor: LoRA's A (r x in) and B (out x r) per adapted projection, or every
    parameter tensor for full fine-tuning."""
    arch, shapes = setup.arch, layer_linear_shapes(setup.arch)
    per_layer = []
    if setup.method == "full":
        for s in shapes.values():
            per_layer += [s.in_features * s.out_features] + ([s.out_features] if s.bias else [])
        per_layer += [arch.hidden_size, arch.hidden_size]
        heads = [arch.vocab_size * arch.hidden_size, arch.hidden_size]
        heads += [] if arch.tie_word_embeddings else [arch.vocab_size * arch.hidden_size]
        return per_layer * arch.num_hidden_layers + heads
    for target in setup.lora_targets:
        per_layer += [setup.lora_rank * shapes[target].in_features, shapes[target].out_features * setup.lora_rank]
    return per_layer * arch.num_hidden_layers


# Bytes autograd keeps per token for one Llama decoder layer under bf16 autocast (bf16 base weights, fp32 LoRA
# adapters, a fused SDPA kernel), MEASURED on the CPU with runners.measure.saved_activation_bytes over eight
# shapes and nine target sets (bench/activation_memory.py; results in bench/results/activation_fit_cpu.json).
# Full fine-tuning: 20h + 8I + 4kv (fit error < 0.1%); a per-tensor count in the manner of Korthikanti et al.
# 2022 §4.1 gives 18h + 8I + 4kv: fp32 RMSNorm inputs (2 x 4h), q, k, v and the attention output, its
# contiguous copy, the SwiGLU tensors (4 x 2I). A frozen base keeps less (inputs of frozen projections are not
# needed), and each adapted projection adds back the input its adapter reads (peft casts it to the adapter's
# dtype) plus the rank-r intermediate. Fit error: within 2% for all-linear and q,v targets; 10% at worst.
ACT_FULL = {"h": 20.0, "I": 8.0, "kv": 4.0}
ACT_LORA_BASE = {"h": 11.7, "I": 6.0, "kv": 4.0}
ACT_LORA_TARGET = {"qkv": 4.7, "o": 3.2, "gate_up": 4.4, "down": 2.2, "rank": 3.1}
# QLoRA keeps 6 bytes x I more per token per layer than LoRA, whatever the targets (measured: exact at three
# shapes, all-linear and q,v): after prepare_model_for_kbit_training part of the MLP path runs in fp32.
ACT_QLORA_EXTRA_I = 6.0
ACT_LORA_DROPOUT = 4.0  # bytes per input element of each adapted projection (fp32 dropped copy + mask), measured
ACT_EAGER_PER_HEAD_TOKEN = 6.0  # fp32 softmax output + its bf16 copy, per head per context token (measured slope)


def activation_bytes_per_token_per_layer(arch: ModelArch, method: Method, seq_len: int, flash_attention: bool = True,
                                         lora_targets: tuple[str, ...] = (), lora_rank: int = 0,
                                         lora_dropout: float = 0.0) -> float:
    """Bytes autograd keeps per token for one decoder layer (see the ACT_* constants for where they come from).

    Without a fused attention kernel the T x T softmax is kept too: 6 a T bytes per token (+2h).
    """
    h, inter = arch.hidden_size, arch.intermediate_size
    kv = arch.kv_heads * arch.head_dim_resolved
    if method == "full":
        total = ACT_FULL["h"] * h + ACT_FULL["I"] * inter + ACT_FULL["kv"] * kv
    else:
        targets = set(lora_targets)
        total = ACT_LORA_BASE["h"] * h + ACT_LORA_BASE["I"] * inter + ACT_LORA_BASE["kv"] * kv
        total += ACT_LORA_TARGET["qkv"] * h * bool(targets & {"q_proj", "k_proj", "v_proj"})
        total += ACT_LORA_TARGET["o"] * h * ("o_proj" in targets)
        total += ACT_LORA_TARGET["gate_up"] * h * bool(targets & {"gate_proj", "up_proj"})
        total += ACT_LORA_TARGET["down"] * inter * ("down_proj" in targets)
        total += ACT_LORA_TARGET["rank"] * lora_rank * len(targets)
        if method == "qlora":
            total += ACT_QLORA_EXTRA_I * inter
        if lora_dropout > 0:
            shapes = layer_linear_shapes(arch)
            total += ACT_LORA_DROPOUT * sum(shapes[t].in_features for t in targets)
    if not flash_attention:
        total += ACT_EAGER_PER_HEAD_TOKEN * arch.num_attention_heads * seq_len + 2.0 * h
    return total


# Backward of a decoder layer holds, beside the layer's kept tensors, the gradients of its intermediate tensors:
# measured with runners.measure.step_peak_bytes, half a layer's kept bytes more; with checkpointing the recomputed
# layer peaks at 1.41-1.52 times its kept bytes (8 shapes) — 1.5 is used.
BACKWARD_TRANSIENT_FACTOR = 0.5
RECOMPUTE_PEAK_FACTOR = 1.5
LOGITS_RETURNED_BYTES_PER_ELEMENT = 2.0

# Cross-entropy over the vocabulary at the start of backward: the bf16 logits the model returns (2 bytes),
# log_softmax's fp32 output kept for backward (4), and the fp32 gradients of both (4 + 4), per logit.
# Transformers' ForCausalLMLoss upcasts logits to fp32 before cross_entropy. Measured: 14.0 bytes per logit (the slope
# of a step's live-bytes peak over the vocabulary size, runners.measure.step_peak_bytes).
LOGITS_BYTES_PER_ELEMENT = 14.0
# The fused head + loss holds one chunk's logits in the compute dtype while it upcasts them to fp32 (2 + 4 bytes);
# the softmax and its gradient reuse the fp32 buffer in place. Measured: 5.98 bytes per chunk logit (the slope of a
# step's live-bytes peak over V, tests/test_memory_peak.py). Beside it: the selected hidden states and their
# gradient, 2 + 2 bytes per element.
FUSED_LOSS_BYTES_PER_ELEMENT = 6.0
FUSED_LOSS_BYTES_PER_HIDDEN = 4.0

# The fused head + loss (runners.loss) works through at most this many positions at a time. Its logits then take
# about chunk x V x 6 bytes (0.7 GiB at V = 128k) whatever the micro-batch, and the gradient's matmul (chunk x h output,
# contracted over V) still has 256 output tiles of 128 x 128 at h = 4096 to spread over a GPU's SMs (132 on an H200).
# Liger Kernel's rule, chunk logits no larger than the hidden states (ceil(T / ceil(V / h)) positions, 64 for
# Llama-3.1-8B at 2048 tokens), saves less than 1 GiB more but leaves its matmuls 32 output tiles.
FUSED_LOSS_CHUNK_TOKENS = 1024


def loss_chunk_tokens(tokens: int) -> int:
    """Positions per chunk of the fused LM head + cross-entropy (see FUSED_LOSS_CHUNK_TOKENS)."""
    return max(1, min(tokens, FUSED_LOSS_CHUNK_TOKENS))


# Model types whose causal-LM forward is exactly decoder -> lm_head -> ForCausalLMLoss (no logit scaling or
# soft-capping): the runner fuses their loss (runners.loss), each checked against the stock loss in tests.
FUSED_LOSS_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3")


def fused_loss_applies(arch: ModelArch, method: Method, lora_targets, requested: bool = True) -> bool:
    """Whether the runner computes this setup's loss fused: asked for, a supported model type, and a frozen head
    (not full fine-tuning, no adapter on lm_head)."""
    return requested and method != "full" and arch.model_type in FUSED_LOSS_MODEL_TYPES and "lm_head" not in lora_targets


def logits_bytes(arch: ModelArch, seq_len: int, micro_batch: int, fused: bool = False,
                 head_cast: bool = False) -> tuple[float, float]:
    """Bytes of the loss: (peak while it is computed, what stays alive through backward).

    Stock (transformers' ForCausalLM + ForCausalLMLoss): B T V x 14 bytes at the loss (LOGITS_BYTES_PER_ELEMENT), and
    the returned bf16 logits (2 bytes each) held by the model's output. Fused (runners.loss): one chunk's logits
    (loss_chunk_tokens x V x 6 bytes) plus the hidden states' copy and gradient (B T h x 4 bytes), of which the
    gradient (2 bytes each) is kept for backward; with `head_cast` (QLoRA, whose head peft keeps in fp32) also the
    head cast to bf16 for the loop (V h x 2 bytes).
    """
    tokens = micro_batch * seq_len
    if not fused:
        return LOGITS_BYTES_PER_ELEMENT * tokens * arch.vocab_size, LOGITS_RETURNED_BYTES_PER_ELEMENT * tokens * arch.vocab_size
    chunk = loss_chunk_tokens(tokens)
    peak = FUSED_LOSS_BYTES_PER_ELEMENT * chunk * arch.vocab_size + FUSED_LOSS_BYTES_PER_HIDDEN * tokens * arch.hidden_size
    return peak + 2.0 * arch.vocab_size * arch.hidden_size * head_cast, 2.0 * tokens * arch.hidden_size


@dataclass(frozen=True)
class TrainingSetup:
    """What a fine-tune looks like to the estimators: the same fields a recipe resolves to."""

    arch: ModelArch
    method: Method = "lora"
    lora_rank: int = 16
    lora_targets: tuple[str, ...] = LINEAR_MODULES
    lora_dropout: float = 0.0
    seq_len: int = 2048
    micro_batch: int = 1
    gpus: int = 1
    sharding: Sharding = "auto"
    gradient_checkpointing: bool = True
    flash_attention: bool = True
    fused_loss: bool = True  # the runner's fused LM head + cross-entropy (LoRA/QLoRA; full fine-tuning trains the head)
    optimizer: Optimizer = "adamw"
    double_quant: bool = True

    @property
    def trainable_params(self) -> int:
        if self.method == "full":
            return param_counts(self.arch).total
        return lora_trainable_params(self.arch, self.lora_rank, self.lora_targets)


@dataclass(frozen=True)
class MemoryBreakdown:
    weights: float
    adapters: float
    gradients: float
    optimizer: float
    activations: float
    logits: float
    overhead: float
    total: float
    sharding: str

    def as_dict(self) -> dict:
        return asdict(self)


def memory_per_gpu(setup: TrainingSetup, overhead_fraction: float = DEFAULT_OVERHEAD_FRACTION,
                   overhead_fixed_gib: float = DEFAULT_OVERHEAD_FIXED_GIB) -> MemoryBreakdown:
    """Peak memory of one GPU in GiB, by component.

    Weights per `weight_bytes`; LoRA adapters in fp32 (peft upcasts adapters of a 16-bit base,
    autocast_adapter_dtype=True) with fp32 gradients and optimizer moments; full fine-tuning keeps bf16
    weights and gradients plus the optimizer's master copy and moments (ZeRO's 16 bytes per parameter).
    Data parallelism (DDP) replicates all of it; FSDP (ZeRO-3) divides weights, gradients and optimizer
    state by the GPU count (Rajbhandari et al. 2020, ZeRO §5). Activations are per GPU (its own micro-batch):
    every layer's kept tensors, or with gradient checkpointing each layer's input, plus the backward's transient
    peak of one layer wherever it exceeds the logits buffers (the two are never alive together). Logits per
    `logits_bytes`. For full fine-tuning the sum is conservative: weight gradients build up while activations
    are freed.
    Checked against the live-bytes peak of real steps (runners.measure.peak_bytes, tests/test_memory_peak.py).
    Overhead per the module constants.
    """
    arch, shard = setup.arch, _sharding(setup)
    divisor = setup.gpus if shard == "fsdp" else 1
    trainable = setup.trainable_params
    if setup.method == "full":
        weights = weight_bytes(arch, "full")
        adapters = 0.0
        gradients = 2.0 * trainable
        optimizer = optimizer_state_bytes(trainable_tensor_numels(setup), setup.optimizer, master_copy=True)
    else:
        weights = weight_bytes(arch, setup.method, setup.double_quant)
        adapters = 4.0 * trainable
        gradients = 4.0 * trainable
        optimizer = optimizer_state_bytes(trainable_tensor_numels(setup), setup.optimizer, master_copy=False)
    tokens = setup.micro_batch * setup.seq_len
    per_layer = activation_bytes_per_token_per_layer(
        arch, setup.method, setup.seq_len, setup.flash_attention, setup.lora_targets, setup.lora_rank, setup.lora_dropout
    ) * tokens
    fused = fused_loss_applies(arch, setup.method, setup.lora_targets, setup.fused_loss)
    logits, held = logits_bytes(arch, setup.seq_len, setup.micro_batch, fused, head_cast=setup.method == "qlora")
    if setup.gradient_checkpointing:
        # each layer keeps only its bf16 input; backward recomputes one layer at a time
        kept, transient = arch.num_hidden_layers * 2.0 * arch.hidden_size * tokens, RECOMPUTE_PEAK_FACTOR * per_layer
    else:
        kept, transient = arch.num_hidden_layers * per_layer, BACKWARD_TRANSIENT_FACTOR * per_layer
    # The loss buffers are freed before the first layer's backward, so the peak holds the larger of the two phases;
    # part of the loss's memory (`held`: the returned logits, or the fused loss's gradient) stays alive through it.
    activations = kept + max(0.0, transient + held - logits)
    parts = [weights / divisor / GIB, adapters / divisor / GIB, gradients / divisor / GIB, optimizer / divisor / GIB,
             activations / GIB, logits / GIB]
    overhead = overhead_fraction * sum(parts) + overhead_fixed_gib
    return MemoryBreakdown(*parts, overhead, sum(parts) + overhead, shard)


def _sharding(setup: TrainingSetup) -> str:
    if setup.gpus == 1:
        return "none"
    if setup.sharding != "auto":
        return setup.sharding
    # auto: DDP when a full replica fits comfortably on a typical 80 GB card, else FSDP.
    replica = replace(setup, gpus=1, sharding="ddp")
    return "ddp" if memory_per_gpu(replica).total <= 70 else "fsdp"


def gpus_needed(setup: TrainingSetup, gpu: Gpu, max_gpus: int = 4096, **overheads) -> int | None:
    """Fewest GPUs of this type whose per-GPU memory fits (FSDP beyond one GPU), or None if none up to max_gpus."""
    for gpus in [1] + [2**k for k in range(1, int(math.log2(max_gpus)) + 1)]:
        candidate = replace(setup, gpus=gpus, sharding="fsdp" if gpus > 1 else "auto")
        if memory_per_gpu(candidate, **overheads).total <= gpu.memory_gib:
            return gpus
    return None


# train.gradient_checkpointing: auto leaves recomputation off only when the estimated peak without it stays under
# this share of the GPU's memory. The margin covers the estimate's error (within 5% of measured peaks on CPU,
# tests/test_memory_peak.py; not yet checked on a GPU, docs/accuracy.md) and allocator fragmentation: running out of
# memory loses the run, while checkpointing costs one more forward of the decoder layers.
AUTO_CHECKPOINTING_MAX_SHARE = 0.90


def choose_checkpointing(setup: TrainingSetup, memory_gib: float | None, overheads: dict | None = None) -> tuple[bool, str]:
    """train.gradient_checkpointing: auto. Off when the estimated peak without it is at most
    AUTO_CHECKPOINTING_MAX_SHARE of `memory_gib` (the GPU's), on otherwise; off with no GPU to size against (a CPU
    run). Recomputation costs one more forward of the decoder layers (`flops_per_token`), so it is paid only when
    memory needs it. Returns the choice and a one-line reason for the estimate and the run report."""
    if memory_gib is None:
        return False, "auto; no GPU memory to size against"
    without = memory_per_gpu(replace(setup, gradient_checkpointing=False), **(overheads or {})).total
    budget = AUTO_CHECKPOINTING_MAX_SHARE * memory_gib
    share = f"{AUTO_CHECKPOINTING_MAX_SHARE:.0%} of {memory_gib:.1f} GiB"
    if without <= budget:
        return False, f"auto; the peak without it, {without:.1f} GiB, is within {budget:.1f} GiB ({share})"
    return True, f"auto; the peak without it, {without:.1f} GiB, exceeds {budget:.1f} GiB ({share})"


def training_flops(flops_per_token_total: float, tokens: float) -> float:
    """Total FLOPs executed: FLOPs per token x tokens trained on."""
    return flops_per_token_total * tokens


def gpu_hours(total_flops: float, peak_flops_per_gpu: float, efficiency: float) -> float:
    """GPU-hours = FLOPs / (peak FLOP/s x achieved fraction) / 3600 s (Narayanan et al. 2021 §5.1 uses the same
    relation to predict end-to-end training time)."""
    if not 0 < efficiency <= 1:
        raise AdvisorError(f"efficiency must be in (0, 1], got {efficiency}")
    return total_flops / (peak_flops_per_gpu * efficiency) / 3600.0


def cost_usd(hours: float, price_usd_per_gpu_hour: float) -> float:
    """Dollars = GPU-hours x price per GPU-hour."""
    return hours * price_usd_per_gpu_hour


def flops_utilization(flops: float, wall_seconds: float, gpus: int, peak_flops_per_gpu: float) -> float:
    """FLOPs / (wall time x GPUs x peak). With model FLOPs it is MFU (Chowdhery et al. 2022, PaLM Appendix B);
    with executed FLOPs (recompute included) the achieved efficiency that gpu_hours divides by."""
    return flops / (wall_seconds * gpus * peak_flops_per_gpu)
