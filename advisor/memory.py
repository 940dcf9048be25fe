"""Every memory term of a training step on one GPU, for a setup whose sharding and checkpointing are decided.

Conventions: bytes are bytes, `*_gib` are GiB (2^30). Which sharding and whether to recompute are policies
(advisor.sizing); this module only adds up what a given choice keeps in memory.
"""

import math
from dataclasses import asdict, dataclass

from advisor.catalog import ModelArch
from advisor.errors import AdvisorError
from advisor.fused_loss import fused_loss_applies, loss_chunk_tokens
from advisor.params import layer_linear_shapes, param_counts, saved_module_params
from advisor.training import Method, Optimizer, TrainingSetup

GIB = 2**30
# Memory the estimate cannot see term by term: the caching allocator's fragmentation and cuBLAS/NCCL
# workspaces, as a fraction of everything else plus a fixed part. Assumed until calibrated.
DEFAULT_OVERHEAD_FRACTION = 0.05
DEFAULT_OVERHEAD_FIXED_GIB = 0.3

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
        per_layer += [shapes[target].out_features] if setup.dora else []  # DoRA's magnitude vector
    return per_layer * arch.num_hidden_layers + saved_module_params(arch, setup.modules_to_save)


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
# step's live-bytes peak over V, tests/test_memory_peak.py). Beside it: the selected hidden states and their
# gradient, 2 + 2 bytes per element.
FUSED_LOSS_BYTES_PER_ELEMENT = 6.0
FUSED_LOSS_BYTES_PER_HIDDEN = 4.0



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
    Checked against the live-bytes peak of real steps (bench.measure.peak_bytes, tests/test_memory_peak.py).
    Overhead per the module constants.
    """
    arch, shard = setup.arch, decided_sharding(setup)
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



def decided_sharding(setup: TrainingSetup) -> str:
    """The setup's sharding as the memory terms need it: none on one GPU, else ddp or fsdp as already decided
    (advisor.sizing.choose_sharding decides `auto`)."""
    if setup.gpus == 1:
        return "none"
    if setup.sharding == "auto":
        raise AdvisorError("memory_per_gpu needs a decided sharding for several GPUs: use advisor.sizing.planned_memory")
    return setup.sharding
