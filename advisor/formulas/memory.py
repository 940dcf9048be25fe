"""Every memory term of a training step on one GPU, for a setup whose sharding and checkpointing are decided.

Conventions: bytes are bytes, `*_gib` are GiB (2^30). Which sharding and whether to recompute are policies
(advisor.plan.sizing); this module only adds up what a given choice keeps in memory.
"""

import functools
import math

from msgspec import Struct
from msgspec.structs import asdict

from advisor.catalog.types import ModelArch
from advisor.core.errors import AdvisorError
from advisor.formulas.fused_loss import fused_loss_applies, loss_chunk_tokens
from advisor.formulas.params import (
    active_intermediate_size, dora_magnitude_numels, full_tensor_numels, lora_input_features, lora_tensor_shapes, param_counts, saved_module_params,
)
from advisor.formulas.setup import Method, Optimizer, TrainingSetup

GIB = 2**30
# Memory the estimate cannot see term by term: the caching allocator's reserve (blocks freed by the step's activations
# and logits, of many sizes and interleaved lifetimes, that later requests cannot reuse) as a fraction of the
# activations and logits at the peak, plus a fixed part for cuBLAS/NCCL workspaces. The fraction is the median over
# the published rows that report reserved memory (bench/published/rows.yaml; `advisor calibrate` refits it, and
# docs/accuracy.md shows the fit); calibrate it from your own runs.
DEFAULT_OVERHEAD_FRACTION = 0.21
DEFAULT_OVERHEAD_FIXED_GIB = 0.3

# NF4 stores 4 bits per weight. Per block of 64 weights it keeps an absmax constant: fp32 (32/64 = 0.5 bit
# per weight) or, with double quantisation, an 8-bit constant plus one fp32 per 256 blocks
# (8/64 + 32/(64*256) = 0.127 bit). Source: Dettmers et al. 2023, QLoRA §3 "Double Quantization".
NF4_BLOCK = 64
NF4_NESTED_BLOCK = 256


def nf4_bytes_per_param(double_quant: bool) -> float:
    """Bytes per NF4-quantised weight, constants included (Dettmers et al. 2023, QLoRA §3)."""
    return NF4_DATA_BYTES + nf4_constant_bytes_per_param(double_quant)


NF4_DATA_BYTES = 0.5  # two 4-bit codes per byte


def nf4_constant_bytes_per_param(double_quant: bool) -> float:
    """Bytes per NF4 weight of its quantisation constants alone (absmax, and with double quantisation its own scales)."""
    return ((8 / NF4_BLOCK + 32 / (NF4_BLOCK * NF4_NESTED_BLOCK)) if double_quant else 32 / NF4_BLOCK) / 8


def unsharded_quant_constant_bytes(setup: TrainingSetup, sharded: bool) -> float:
    """QLoRA under FSDP: bitsandbytes keeps each 4-bit weight's quantisation constants in a QuantState on the module,
    not in the parameter FSDP flattens ("the quant state got lost when the parameter got converted. This happens for
    example for fsdp since we registered the module, we can recover the state here", bitsandbytes/nn/modules.py
    fix_4bit_weight_quant_state_from_module), so FSDP neither shards nor offloads them: every GPU holds all of them.
    Returns what that adds beyond the sharded share `weight_bytes / GPUs` already counts."""
    if setup.method != "qlora" or not sharded:
        return 0.0
    constants = param_counts(setup.arch).linear_weights * nf4_constant_bytes_per_param(setup.double_quant)
    return constants * (1.0 if setup.cpu_offload else 1.0 - 1.0 / setup.gpus)


def weight_bytes(arch: ModelArch, method: Method, double_quant: bool = True, embeddings_dtype: str = "bfloat16") -> float:
    """Bytes of the model's own weights on one unsharded replica.

    full / lora: every parameter in bf16 (2 bytes). qlora: the decoder's nn.Linear projections in NF4; embeddings,
    norms, biases and the LM head stay unquantised, as bitsandbytes does through transformers (its
    get_keys_to_not_convert keeps the output embedding). `embeddings_dtype` bf16: kept in the compute dtype
    (2 bytes), as this project's runner, torchtune and fsdp_qlora do; fp32: peft's prepare_model_for_kbit_training
    casts those remaining 16-bit parameters to fp32 (4 bytes). A MoE's routed experts are fused 3-D parameters in
    transformers 5, not nn.Linear: bitsandbytes leaves them (and the routers) in 16 bits (measured on transformers
    5.24 / peft 0.21 for qwen3_moe, gpt_oss and llama4_text), so they count with the unquantised rest.
    """
    counts = param_counts(arch)
    if method != "qlora":
        return 2.0 * counts.total
    rest = counts.total - counts.linear_weights
    return counts.linear_weights * nf4_bytes_per_param(double_quant) + DTYPE_BYTES[embeddings_dtype] * rest


DTYPE_BYTES = {"float32": 4.0, "bfloat16": 2.0}


# bitsandbytes' 8-bit optimizers keep 32-bit state for tensors under 4096 elements (Optimizer8bit's
# min_8bit_size) and, per block of 256 elements, two fp32 absmax scales (Optimizer2State.init_state).
BNB_MIN_8BIT_SIZE = 4096
BNB_OPTIM_BLOCK = 256


def optimizer_state_bytes(tensor_numels, optimizer: Optimizer, master_copy: bool, moment_bytes: float = 4.0) -> float:
    """Optimizer state for trainable tensors of these sizes. AdamW keeps two moments in the parameter's dtype (torch
    allocates exp_avg and exp_avg_sq like the parameter: fp32 adapters or master weights, 4 bytes each; a pure-bf16
    model, 2 bytes each); 8-bit AdamW keeps them in 8 bits (2 bytes) plus block scales (Dettmers et al. 2022, 8-bit
    Optimizers via Block-wise Quantization), except for small tensors. Mixed-precision full training also keeps an
    fp32 master copy of the weights (4 bytes; Micikevicius et al. 2018; ZeRO, Rajbhandari et al. 2020 §3.1: K = 12)."""
    numels = list(tensor_numels)
    eight_bit = [] if optimizer == "adamw" else [n for n in numels if n >= BNB_MIN_8BIT_SIZE]
    # integer byte counts summed per kind (exact in floating point below 2**53 bytes, as the per-tensor sum was)
    full_width = sum(numels) - sum(eight_bit)
    total = 2.0 * moment_bytes * full_width + sum(2.0 * n + 2 * 4.0 * math.ceil(n / BNB_OPTIM_BLOCK) for n in eight_bit)
    return total + (4.0 * sum(numels) if master_copy else 0.0)


def trainable_state_bytes(setup: TrainingSetup) -> tuple[float, float, float]:
    """(trainable weights beyond the base, gradients, optimizer state) in bytes on one unsharded replica.

    Full fine-tuning, bf16-mixed: bf16 gradients, fp32 master copy and fp32 moments (ZeRO's 16 bytes per parameter
    with the bf16 weights); bf16-pure (torchtune's dtype=bf16, a model loaded in bf16 under HF Trainer): bf16
    gradients and bf16 moments, no master copy (8 bytes). LoRA: the adapters, their gradients and moments in the
    adapter dtype (fp32: 16 bytes per adapter parameter; bf16: 8). With the optimizer step in backward (torchtune's
    optimizer_in_bwd) each gradient is freed once applied: only the largest tensor's gradient is alive.
    """
    numels = trainable_tensor_numels(setup)
    trainable = setup.trainable_params
    if setup.method == "full":
        pure = setup.precision == "bf16-pure"
        adapters, grad_bytes = 0.0, 2.0
        optimizer = optimizer_state_bytes(numels, setup.optimizer, master_copy=not pure, moment_bytes=2.0 if pure else 4.0)
    else:
        width = DTYPE_BYTES[setup.adapter_dtype]
        adapters, grad_bytes = width * trainable, width
        optimizer = optimizer_state_bytes(numels, setup.optimizer, master_copy=False, moment_bytes=width)
    gradients = grad_bytes * (max(numels) if setup.optimizer_in_backward else trainable)
    return adapters, gradients, optimizer


def trainable_tensor_numels(setup: "TrainingSetup") -> tuple[int, ...]:
    """Element counts of each trainable tensor: LoRA's A (r x in) and B (out x r) per adapted projection (experts and
    routers as peft reaches them, advisor.formulas.params.lora_tensor_shapes), DoRA's magnitudes and modules_to_save, or every
    parameter tensor for full fine-tuning."""
    return _tensor_numels(setup.arch, setup.method, setup.lora_rank, setup.lora_targets, setup.dora,
                          setup.modules_to_save)


# The decision costs one architecture on many GPU counts and savers: the counts depend on these fields only (all
# hashable), so they are computed once per combination.
@functools.lru_cache(maxsize=1024)
def _tensor_numels(arch: ModelArch, method: str, rank: int, targets: tuple[str, ...], dora: bool,
                   modules_to_save: tuple[str, ...]) -> tuple[int, ...]:
    if method == "full":
        return tuple(full_tensor_numels(arch))
    numels = [rows * cols for rows, cols in lora_tensor_shapes(arch, rank, targets)]
    numels += dora_magnitude_numels(arch, targets) if dora else []  # DoRA's magnitude vectors
    return tuple(numels + list(saved_module_params(arch, modules_to_save)))


# Bytes autograd keeps per token for one Llama decoder layer under bf16 autocast (bf16 base weights, fp32 LoRA
# adapters, a fused SDPA kernel), MEASURED on the CPU with bench.measure.saved_activation_bytes over eight
# shapes and nine target sets (bench/activation_memory.py; results in bench/results/activation_fit_cpu.json).
# Full fine-tuning: 20h + 8I + 4kv (fit error < 0.1%); a per-tensor count in the manner of Korthikanti et al.
# 2022 §4.1 gives 18h + 8I + 4kv: fp32 RMSNorm inputs (2 x 4h), q, k, v and the attention output, its
# contiguous copy, the SwiGLU tensors (4 x 2I). A frozen base keeps less (inputs of frozen projections are not
# needed), and each adapted projection adds back the input its adapter reads (peft casts it to the adapter's
# dtype) plus the rank-r intermediate. Fit error: within 2% for all-linear and q,v targets; 10% at worst.
ACT_FULL = {"h": 20.0, "I": 8.0, "kv": 4.0}
ACT_LORA_BASE = {"h": 11.7, "I": 6.0, "kv": 4.0}
ACT_LORA_TARGET = {"qkv": 4.7, "o": 3.2, "gate_up": 4.4, "down": 2.2, "rank": 3.1}
# QLoRA prepared with peft's prepare_model_for_kbit_training keeps 6 bytes x I more per token per layer than LoRA,
# whatever the targets (measured: exact at three shapes, all-linear and q,v): its fp32 norms put part of the MLP path
# in fp32. With the unquantised parameters kept in bf16 (the runner's default) QLoRA keeps what LoRA keeps (measured
# within 1.5% at h=288, I=768, all-linear and q,v: bench/results/qlora_dtype_cpu.json, tests/advisor/test_activation_memory.py).
ACT_QLORA_EXTRA_I = 6.0
# Adapters in bf16 (torchtune, fsdp_qlora, peft with autocast_adapter_dtype=False) read the layer's bf16 input with no
# cast copy: 1.0 byte less per input element of each adapted projection than the fp32 adapters the ACT_LORA_* fits
# measured (measured on the CPU at two shapes and two target sets: 0.95-1.03; bench/lora_dropout_dtype.py,
# bench/results/lora_dropout_dtype_cpu.json).
ACT_BF16_ADAPTER_SAVING = 1.0
# LoRA dropout, bytes per input element of each adapted projection, on a GPU. Measured on the CPU: +4.0 (fp32 adapters)
# and +2.9-3.0 (bf16), where torch's dropout keeps a noise tensor in the input's dtype (ATen Dropout.cpp `_dropout_impl`:
# input * noise). On CUDA `at::dropout` takes the fused `native_dropout`, whose backward keeps a bool mask instead
# (1 byte; derivatives.yaml native_dropout -> native_dropout_backward(grad, result1, scale)): the CPU figure less the
# noise (4 or 2 bytes) plus the mask. fp32: the dropped copy replaces peft's cast copy; bf16: the dropped copy is new.
ACT_LORA_DROPOUT = {"float32": 1.0, "bfloat16": 2.0}
ACT_EAGER_PER_HEAD_TOKEN = 6.0  # fp32 softmax output + its bf16 copy, per head per context token (measured slope)


def activation_bytes_per_token_per_layer(arch: ModelArch, method: Method, seq_len: int, flash_attention: bool = True,
                                         lora_targets: tuple[str, ...] = (), lora_rank: int = 0,
                                         lora_dropout: float = 0.0, qlora_embeddings_dtype: str = "bfloat16",
                                         adapter_dtype: str = "float32") -> float:
    """Bytes autograd keeps per token for one decoder layer (see the ACT_* constants for where they come from).

    Adapters in bf16 keep ACT_BF16_ADAPTER_SAVING bytes less per adapted input element; dropout adds
    ACT_LORA_DROPOUT[adapter_dtype] per adapted input element (as on a GPU).

    Without a fused attention kernel the T x T softmax is kept too: 6 a T bytes per token (+2h).
    """
    h, inter = arch.hidden_size, active_intermediate_size(arch)  # a MoE token's MLP width: its top-k experts'
    kv = arch.kv_width
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
        if method == "qlora" and qlora_embeddings_dtype == "float32":
            total += ACT_QLORA_EXTRA_I * inter
        inputs = lora_input_features(arch, tuple(targets)) if targets else 0
        total -= ACT_BF16_ADAPTER_SAVING * inputs * (adapter_dtype == "bfloat16")
        if lora_dropout > 0:
            total += ACT_LORA_DROPOUT[adapter_dtype] * inputs
    if not flash_attention:
        total += ACT_EAGER_PER_HEAD_TOKEN * arch.num_attention_heads * seq_len + 2.0 * h
    return total


# Backward of a decoder layer holds, beside the layer's kept tensors, the gradients of its intermediate tensors:
# measured with bench.measure.step_peak_bytes, half a layer's kept bytes more; with checkpointing the recomputed
# layer peaks at 1.41-1.52 times its kept bytes (8 shapes) — 1.5 is used.
BACKWARD_TRANSIENT_FACTOR = 0.5
RECOMPUTE_PEAK_FACTOR = 1.5
LOGITS_RETURNED_BYTES_PER_ELEMENT = 2.0

# Cross-entropy over the vocabulary at the start of backward: the bf16 logits the model returns (2 bytes),
# log_softmax's fp32 output kept for backward (4), and the fp32 gradients of both (4 + 4), per logit.
# Transformers' ForCausalLMLoss upcasts logits to fp32 before cross_entropy. Measured: 14.0 bytes per logit (the slope
# of a step's live-bytes peak over the vocabulary size, bench.measure.step_peak_bytes).
LOGITS_BYTES_PER_ELEMENT = 14.0
# The fused head + loss holds one chunk's logits in the compute dtype while it upcasts them to fp32 (2 + 4 bytes);
# the softmax and its gradient reuse the fp32 buffer in place. Measured: 5.98 bytes per chunk logit (the slope of a
# step's live-bytes peak over V, tests/runners/test_memory_peak.py). Beside it: the selected hidden states and their
# gradient, 2 + 2 bytes per element.
FUSED_LOSS_BYTES_PER_ELEMENT = 6.0
FUSED_LOSS_BYTES_PER_HIDDEN = 4.0



# transformers before ForCausalLMLoss (v4.46, 2024-10): the causal-LM forward upcast the logits to fp32 (`logits =
# logits.float()`) and the loss shifted them with a contiguous copy (`logits[..., :-1, :].contiguous()`), so the loss
# held 4 bytes per logit more at its peak, and autograd kept the fp32 log-softmax (4 bytes) through backward.
LEGACY_LOGITS_BYTES_PER_ELEMENT = 18.0
LEGACY_LOGITS_HELD_BYTES_PER_ELEMENT = 4.0
# torchtune's CEWithChunkedOutputLoss: the head's bf16 logits come back in 8 chunks (num_output_chunks) and each chunk is
# upcast and reduced on its own, so the fp32 buffers of LOGITS_BYTES_PER_ELEMENT hold one chunk at a time.
CHUNKED_LOSS_CHUNKS = 8
# Eager (not compiled), each chunk's cross_entropy keeps its fp32 log-softmax output for backward, so every chunk's is
# alive at the end of the loss: 4 bytes per logit beside the 2 of the bf16 chunks; one chunk's remaining fp32 buffers
# (LOGITS_BYTES_PER_ELEMENT less those 6) on top. Measured: 4.13 bytes saved per logit (saved_tensors_hooks, CPU,
# 1,024 tokens x 8,192 vocabulary in 8 chunks; tests/runners/test_memory_peak.py).
CHUNKED_SAVED_BYTES_PER_ELEMENT = 4.0
# Under torch.compile (torchtune compiles the loss with the model) inductor fuses each chunk's upcast, log-softmax and
# their backward, so only the bf16 logits and one chunk's fp32 gradient (4 bytes per logit of a chunk) stay alive.
COMPILED_CHUNK_BYTES_PER_ELEMENT = 4.0
# Nothing of the chunked loss outlives the head's backward: torchtune's recipes drop their reference to the logits
# before backward ("# free logits otherwise it peaks backward memory / del logits", recipes/lora_finetune_single_device.py
# _loss_step @ 1814feb17), and autograd frees each chunk's saved logits once that chunk's loss backward has run, before
# any decoder layer's backward.
CHUNKED_LOSS_HELD_BYTES = 0.0


def logits_bytes(arch: ModelArch, seq_len: int, micro_batch: int, fused: bool = False,
                 head_cast: bool = False, chunked: bool = False, compiled: bool = False,
                 legacy: bool = False) -> tuple[float, float]:
    """Bytes of the loss: (peak while it is computed, what stays alive through backward).

    Stock (transformers' ForCausalLM + ForCausalLMLoss): B T V x 14 bytes at the loss (LOGITS_BYTES_PER_ELEMENT), and
    the returned bf16 logits (2 bytes each) held by the model's output. Fused (runners.loss, Liger's fused linear
    cross-entropy): one chunk's logits (loss_chunk_tokens x V x 6 bytes) plus the hidden states' copy and gradient
    (B T h x 4 bytes), of which the gradient (2 bytes each) is kept for backward; with `head_cast` (QLoRA, whose head
    peft keeps in fp32) also the head cast to bf16 for the loop (V h x 2 bytes). Chunked (torchtune): every chunk's bf16
    logits (2 bytes), every chunk's saved fp32 log-softmax (CHUNKED_SAVED_BYTES_PER_ELEMENT) and one chunk's remaining
    fp32 buffers; compiled: the bf16 logits and one chunk's fp32 gradient (COMPILED_CHUNK_BYTES_PER_ELEMENT /
    CHUNKED_LOSS_CHUNKS); none of it held through the layers' backward (CHUNKED_LOSS_HELD_BYTES). Legacy (transformers before v4.46): per
    LEGACY_LOGITS_BYTES_PER_ELEMENT and LEGACY_LOGITS_HELD_BYTES_PER_ELEMENT.
    """
    tokens = micro_batch * seq_len
    logits = tokens * arch.vocab_size
    if chunked:
        if compiled:
            per_logit = LOGITS_RETURNED_BYTES_PER_ELEMENT + COMPILED_CHUNK_BYTES_PER_ELEMENT / CHUNKED_LOSS_CHUNKS
        else:
            kept = LOGITS_RETURNED_BYTES_PER_ELEMENT + CHUNKED_SAVED_BYTES_PER_ELEMENT
            per_logit = kept + (LOGITS_BYTES_PER_ELEMENT - kept) / CHUNKED_LOSS_CHUNKS
        return per_logit * logits, CHUNKED_LOSS_HELD_BYTES
    if legacy:
        return LEGACY_LOGITS_BYTES_PER_ELEMENT * logits, LEGACY_LOGITS_HELD_BYTES_PER_ELEMENT * logits
    if not fused:
        return LOGITS_BYTES_PER_ELEMENT * logits, LOGITS_RETURNED_BYTES_PER_ELEMENT * logits
    chunk = loss_chunk_tokens(tokens)
    peak = FUSED_LOSS_BYTES_PER_ELEMENT * chunk * arch.vocab_size + FUSED_LOSS_BYTES_PER_HIDDEN * tokens * arch.hidden_size
    return peak + 2.0 * arch.vocab_size * arch.hidden_size * head_cast, 2.0 * tokens * arch.hidden_size


# FSDP gathers one wrapped unit (a decoder layer) at a time and prefetches the next: PyTorch FSDP's rate limiter allows
# two all-gathers in flight (Zhao et al. 2023, "PyTorch FSDP", §4.3 and limit_all_gathers), so two layers' full
# weights are alive beside the shards, and backward holds one layer's unsharded gradients until its reduce-scatter.
# The root unit (embeddings, final norm, LM head) stays gathered from the first forward until its backward ends.
FSDP_INFLIGHT_LAYERS = 2


def fsdp_buffer_bytes(setup: TrainingSetup) -> float:
    """Unsharded FSDP buffers on one GPU: FSDP_INFLIGHT_LAYERS decoder layers' weights (bf16, or NF4 codes for QLoRA), one
    layer's unsharded gradients (full fine-tuning, bf16), and the root unit's embeddings and head in the compute dtype."""
    arch, counts = setup.arch, param_counts(setup.arch)
    per_layer = counts.layers / arch.num_hidden_layers
    layer_linear = counts.linear_weights / arch.num_hidden_layers
    if setup.method == "qlora":  # the gathered parameter holds the 4-bit codes; the constants stay on the module
        layer = layer_linear * NF4_DATA_BYTES + 2.0 * (per_layer - layer_linear)
    else:
        layer = 2.0 * per_layer
    grads = 2.0 * per_layer if setup.method == "full" else 0.0
    root = 2.0 * (counts.embedding + counts.lm_head + arch.hidden_size)
    return FSDP_INFLIGHT_LAYERS * layer + grads + root


# Activation offloading (torchtune's OffloadActivations, fsdp_qlora's CPU activation offload) copies each kept tensor to
# CPU memory after the layer that made it and back before its backward: the layer being computed and the one in
# transfer stay on the GPU.
OFFLOAD_RESIDENT_LAYERS = 2


class MemoryBreakdown(Struct, frozen=True):
    weights: float
    adapters: float
    gradients: float
    optimizer: float
    activations: float
    logits: float
    overhead: float
    total: float
    sharding: str
    buffers: float = 0.0   # FSDP's unsharded layers and root unit (fsdp_buffer_bytes)
    reserve: float = 0.0   # of overhead: the caching allocator's share, which allocated-bytes statistics leave out

    @property
    def allocated(self) -> float:
        """The peak as torch.cuda.max_memory_allocated counts it: the total less the allocator's reserve."""
        return self.total - self.reserve

    def as_dict(self) -> dict:
        return asdict(self)


def memory_per_gpu(setup: TrainingSetup, overhead_fraction: float = DEFAULT_OVERHEAD_FRACTION,
                   overhead_fixed_gib: float = DEFAULT_OVERHEAD_FIXED_GIB) -> MemoryBreakdown:
    """Peak memory of one GPU in GiB, by component.

    Weights per `weight_bytes`; adapters, gradients and optimizer state per `trainable_state_bytes`.
    Data parallelism (DDP) replicates all of it; FSDP (ZeRO-3) divides weights, gradients and optimizer
    state by the GPU count (Rajbhandari et al. 2020, ZeRO §5) and adds its unsharded buffers (`fsdp_buffer_bytes`);
    with CPU offload the shards live in CPU memory and only the buffers stay. Activations are per GPU (its own
    micro-batch, at the longest length when batches are padded): every layer's kept tensors, or with gradient
    checkpointing each layer's input, plus the backward's transient peak of one layer; activation offloading keeps
    OFFLOAD_RESIDENT_LAYERS of them. Logits per `logits_bytes`. The peak is the larger of two phases: the loss at the
    end of the forward (no gradients yet, unless accumulation keeps them) and the backward (gradients, the kept
    activations, one layer's transient, what the loss leaves alive); `activations` is what they add at that peak.
    Overhead: DEFAULT_OVERHEAD_FRACTION of the per-step part plus a fixed part.
    Checked against the live-bytes peak of real steps (bench.measure.peak_bytes, tests/runners/test_memory_peak.py) and
    against published GPU measurements (docs/accuracy.md). Overhead per the module constants.
    """
    arch, shard = setup.arch, decided_sharding(setup)
    sharded = shard == "fsdp"
    divisor = (math.inf if setup.cpu_offload else setup.gpus) if sharded else 1
    weights = weight_bytes(arch, setup.method, setup.double_quant, setup.qlora_embeddings_dtype)
    adapters, gradients, optimizer = trainable_state_bytes(setup)
    tokens = setup.micro_batch * setup.seq_len
    per_layer = activation_bytes_per_token_per_layer(
        arch, setup.method, setup.seq_len, setup.flash_attention, setup.lora_targets, setup.lora_rank,
        setup.lora_dropout, setup.qlora_embeddings_dtype, setup.adapter_dtype
    ) * tokens
    fused = setup.loss == "fused" or (setup.loss == "auto" and fused_loss_applies(arch, setup.method, setup.lora_targets,
                                                                                    setup.fused_loss))
    head_cast = setup.method == "qlora" and setup.qlora_embeddings_dtype == "float32"
    logits, held = logits_bytes(arch, setup.seq_len, setup.micro_batch, fused, head_cast, setup.loss == "chunked",
                                setup.compile, setup.loss == "stock-legacy")
    layers_kept = min(arch.num_hidden_layers, OFFLOAD_RESIDENT_LAYERS) if setup.activation_offloading \
        else arch.num_hidden_layers
    if setup.gradient_checkpointing:
        # each layer keeps only its bf16 input; backward recomputes one layer at a time
        kept, transient = layers_kept * 2.0 * arch.hidden_size * tokens, RECOMPUTE_PEAK_FACTOR * per_layer
    else:
        kept, transient = layers_kept * per_layer, BACKWARD_TRANSIENT_FACTOR * per_layer
    # Two phases peak: the loss at the end of the forward, and the backward. The loss buffers are freed before the
    # first layer's backward; part of them (`held`: the returned logits, or the fused loss's gradient) stays alive
    # through it. Gradients exist only in the backward phase unless accumulation keeps them across micro-batches
    # (optimizer.zero_grad(set_to_none=True), torch's default since 2.0, frees them after each step).
    # In the backward the gradients build up layer by layer as the kept activations are freed, so their sum peaks at
    # one end: max(gradients, kept), plus one layer's transient and what the loss leaves alive. A trained LM head gets
    # its gradient while the loss's buffers are still alive (the head's backward is the loss's last step).
    grads = gradients / divisor
    grads_at_loss = grads if setup.grad_accum > 1 else 0.0
    head_grad = 2.0 * arch.vocab_size * arch.hidden_size / divisor if setup.method == "full" else 0.0
    backward = (grads + kept if setup.grad_accum > 1 else max(grads, kept)) + transient + held
    at_loss = grads_at_loss + kept + logits + head_grad
    peak = max(at_loss, backward)
    activations, logits = split_above_gradients(peak - grads, logits if at_loss >= backward else held)
    buffers = fsdp_buffer_bytes(setup) / GIB if sharded else 0.0
    parts = dict(weights=(weights / divisor + unsharded_quant_constant_bytes(setup, sharded)) / GIB,
                 adapters=adapters / divisor / GIB, gradients=grads / GIB, optimizer=optimizer / divisor / GIB,
                 activations=activations / GIB, logits=logits / GIB)
    # the allocator's reserve grows with the varied, interleaved tensors of the forward and backward (activations and
    # logits); weights and states stay, and gradients and FSDP buffers come back in the same sizes every step
    reserve = overhead_fraction * max(0.0, (peak - grads) / GIB)
    overhead = reserve + overhead_fixed_gib
    return MemoryBreakdown(**parts, overhead=overhead, total=sum(parts.values()) + buffers + overhead, sharding=shard,
                           buffers=buffers, reserve=reserve)


def split_above_gradients(above: float, loss_alive: float) -> tuple[float, float]:
    """(activations, logits) of a breakdown whose gradients are shown whole: what the peak holds above the
    gradients, with the loss's share the loss buffers alive in the peak's phase (all of them at the end of the
    forward, what stays alive through the backward otherwise) and the rest activations. Neither is negative, and
    they sum to `above`, whichever phase peaks (memory_per_gpu's two phases do not stack)."""
    logits = min(loss_alive, max(0.0, above))
    return max(0.0, above) - logits, logits


def decided_sharding(setup: TrainingSetup) -> str:
    """The setup's sharding as the memory terms need it: none on one GPU, else ddp or fsdp as already decided
    (advisor.plan.sizing.choose_sharding decides `auto`)."""
    if setup.gpus == 1:
        return "none"
    if setup.sharding == "auto":
        raise AdvisorError("memory_per_gpu needs a decided sharding for several GPUs: use advisor.plan.sizing.planned_memory")
    return setup.sharding
