"""How long one optimizer step takes on one GPU: matmuls at an achieved fraction of dense peak, memory-bound work at the
memory bandwidth, data-parallel / FSDP communication over the interconnect, and a fixed cost per step.

Each term is one pure function with its source. The work (FLOPs and bytes) of a setup does not depend on the fitted
constants (`StepWork`); the constants (`StepTimeConstants`) turn it into seconds on a GPU (`step_seconds`), so a fit
(advisor.measure.published_fit) re-evaluates only the arithmetic. The shipped constants `DEFAULT_STEP_TIME` are fitted to the
published measurements in bench/published/rows.yaml (docs/accuracy.md shows the fit, in-sample and leave-one-out).

Conventions: FLOPs count a multiply-add as 2; "model" FLOPs (what MFU counts, advisor.formulas.flops) are kept apart from the
"executed" FLOPs here (causal attention as the kernel runs it, recomputation, padding).
"""

from msgspec import Struct

from advisor.catalog.types import Gpu, ModelArch
from advisor.formulas.flops import attended_keys, expert_matmul_flops_per_token
from advisor.formulas.memory import ACT_FULL, NF4_DATA_BYTES, nf4_bytes_per_param, trainable_tensor_numels
from advisor.catalog.arch import describe
from advisor.formulas.params import active_intermediate_size, layer_linear_shapes, param_counts
from advisor.formulas.setup import TrainingSetup


class StepTimeConstants(Struct, frozen=True):
    """The fitted constants of the step-time model, each with a physical meaning (docs/estimation.md)."""
    matmul_fraction_max: float    # achieved fraction of dense peak for large matmuls
    matmul_half_tokens: float     # tokens per micro-batch at which matmuls reach half of matmul_fraction_max
    step_fixed_s: float           # seconds per optimizer step that no FLOP or byte explains (launches, Python, sync)
    eager_traffic_factor: float   # eager kernels' elementwise bytes over the fused minimum (torch.compile reaches 1)
    source: str = ""


# Fitted by `advisor calibrate bench/published/rows.yaml` (advisor.measure.published_fit.fit_constants) on the plausible,
# expressible throughput rows; refitting reproduces them (tests/advisor/test_published.py).
DEFAULT_STEP_TIME = StepTimeConstants(
    matmul_fraction_max=0.90, matmul_half_tokens=1592.0, step_fixed_s=0.03, eager_traffic_factor=3.12,
    source="fitted to bench/published/rows.yaml (docs/accuracy.md)",
)

# Achieved NCCL bus bandwidth over the theoretical link rate: 783 of 900 GB/s on H100 NVLink (NVIDIA/nccl#1264);
# PCIe reaches about 80% of its theoretical rate (the same figure as the catalog's notes). One figure for both.
COMM_EFFICIENCY = 0.85
# With CPU offload the optimizer update runs on the host, over the GPU's shard, and is memory-bound there as on the GPU
# (optimizer_step_bytes). A DGX H100 has two Xeon Platinum 8480C, each with 8 channels of DDR5-4800 (Intel ARK):
# 8 x 4800 MT/s x 8 bytes = 307 GB/s per socket, 614 GB/s for 8 GPUs, 76.8 GB/s per GPU. No CPU optimizer reaches its
# DRAM's peak, so the step time this gives is a lower bound (no published offload row of full fine-tuning checks it).
HOST_DRAM_GBS_PER_GPU = 76.8
# Where the catalog states no scale-out network for a GPU (PCIe cards, workstations): a 100 GbE link per node of 8
# GPUs, 12.5 Gb/s per GPU. An assumption, said wherever it is used; --interconnect gives the real figure.
ASSUMED_INTERNODE_GBPS = 12.5
# Fraction of dense bf16 peak a fused attention kernel reaches, by GPU generation, where it is published below the
# matmul ceiling: FlashAttention-2 (what PyTorch's SDPA flash backend and transformers' flash_attention_2 run) reaches
# "only 35% utilization on H100 GPUs" (Shah et al. 2024, FlashAttention-3, abstract). On Ampere it reaches "50-73% of
# the theoretical maximum FLOPs/s on A100" (Dao 2023, FlashAttention-2, abstract), which the fitted matmul fraction
# already covers, so no entry. No published figure for Blackwell: its attention runs at the matmul fraction, and
# docs/estimation.md says so.
ATTENTION_KERNEL_FRACTION = {"Hopper": 0.35}
# FlashAttention-2's backward runs five T x T matmuls per head against the forward's two (it recomputes Q K^T and the
# softmax instead of storing them): 2.5x the forward's FLOPs (Dao 2023, FlashAttention-2 §3.1, Algorithm 2).
ATTENTION_BACKWARD_FACTOR = 2.5


class StepWork(Struct, frozen=True):
    """What one GPU does in one optimizer step, in FLOPs and bytes, before any rate is applied."""
    micro_batches: int
    tokens_per_micro_batch: float
    matmul_flops: float       # per micro-batch: projections, routers and LM head, forward + backward + recompute
    attention_flops: float    # per micro-batch: causal attention as executed
    elementwise_bytes: float  # per micro-batch: norms, activations, RoPE, residuals, softmax-free elementwise work
    fixed_bytes: float        # per micro-batch: NF4 dequantisation and LoRA's small memory-bound matmuls
    comm_bytes: float         # per micro-batch: FSDP all-gathers and reduce-scatters
    host_bytes: float         # per micro-batch: CPU offload's host <-> GPU copies
    step_bytes: float         # per step: optimizer update, clipping, zeroing
    step_comm_bytes: float    # per step: DDP's gradient all-reduce
    expert_flops: float = 0.0        # per micro-batch: a MoE's routed experts (top-k per token), as executed
    ranks: int = 1                   # GPUs taking part in the collectives
    internode_gbps: float | None = None  # network per GPU between nodes, Gb/s (None: the GPU catalog's)
    tokens_per_expert: float = 0.0   # rows of each expert's GEMM per micro-batch (tokens x k / E, balanced routing)
    host_step_bytes: float = 0.0     # per step: the optimizer update that CPU offload runs on the host
    flash_attention: bool = True     # attention in a fused kernel (ATTENTION_KERNEL_FRACTION), else as matmuls


def dense_matmul_flops_per_token(arch: ModelArch, method: str, lora_params: int, checkpointing: bool) -> float:
    """Executed FLOPs per token of the projections and the LM head (2 per weight per token forward; Kaplan et al.
    2020 §2.1). Backward: full fine-tuning 4 per weight (activation and weight gradients); a frozen base 2 (activation
    gradients only), adapters 6 per adapter weight in all. Checkpointing re-runs the decoder layers' forward (Chen
    et al. 2016)."""
    counts = param_counts(arch)
    n_mm = counts.linear_weights + counts.router + arch.vocab_size * arch.hidden_size
    forward = 2.0 * n_mm
    backward = 4.0 * n_mm if method == "full" else 2.0 * n_mm
    adapters = 6.0 * lora_params if method != "full" else 0.0
    recompute = 2.0 * (counts.linear_weights + counts.router) + 2.0 * lora_params * (method != "full") \
        if checkpointing else 0.0
    return forward + backward + adapters + recompute


def tokens_per_expert(arch: ModelArch, tokens: float) -> float:
    """Rows of each routed expert's GEMM in a micro-batch of `tokens` tokens under balanced routing: tokens x k / E
    (the load-balancing loss drives routing towards it; Fedus et al. 2022 §2.2). The experts' matmuls run at the
    efficiency of this M, not of the whole micro-batch: grouped or per-expert GEMMs with few rows are as starved as a
    dense matmul with few tokens. 0 for a dense model."""
    first = next((layer.experts for layer in describe(arch).layers if layer.experts), None)
    return tokens * first.per_token / first.count if first else 0.0


def moe_dispatch_bytes_per_token(arch: ModelArch, checkpointing: bool) -> float:
    """Bytes a MoE layer's routing moves per token besides the GEMMs: each of the k copies of the hidden state is
    gathered into its expert's rows (read + write, 2 h bytes each in bf16) and its output scattered back and summed
    with the router's weight (read + read-modify-write of the sum), about 8 h k bytes forward; backward moves twice
    that; checkpointing adds one more forward. transformers 5's experts (index_select / index_add_ per expert, or
    grouped_mm after a sort) move at least this."""
    per_layer = sum(8.0 * layer.experts.hidden * layer.experts.per_token
                    for layer in describe(arch).layers if layer.experts)
    return per_layer * (1.0 + 2.0 + (1.0 if checkpointing else 0.0))


def causal_attention_flops_per_token(arch: ModelArch, seq_len: float, checkpointing: bool, flash: bool = True) -> float:
    """Executed attention FLOPs per token: Q K^T and A V are 4 T d_attn per token per layer over a full context (PaLM,
    Chowdhery et al. 2022 Appendix B); a causal kernel skips the masked half (2 T d_attn). Backward per
    ATTENTION_BACKWARD_FACTOR; checkpointing adds one more forward. Without a fused kernel the full T x T is computed.
    Sliding-window layers: a fused kernel computes only the window's blocks (FlashAttention-2's window_size), so their
    keys per query are advisor.formulas.flops.attended_keys'; without one the masked T x T is computed in full."""
    d_attn = arch.attention_width
    forward = 4.0 * attended_keys(arch, seq_len, causal=flash, windowed=flash) * d_attn
    return forward * (1.0 + ATTENTION_BACKWARD_FACTOR + (1.0 if checkpointing else 0.0))


def elementwise_bytes_per_token(arch: ModelArch, checkpointing: bool) -> float:
    """The least bytes the memory-bound kernels of the decoder layers move per token, as fused kernels (torch.compile)
    move them: every tensor a layer keeps for backward (ACT_FULL, measured: 20h + 8I + 4kv bytes) is written once and
    read once in the forward, and backward moves about twice the forward's bytes (a gradient written and read per
    activation, the activation read again); checkpointing adds one more forward. A roofline reading of the norms,
    SwiGLU, RoPE and residual adds (Williams et al. 2009). Eager PyTorch runs each of them as several kernels, each
    reading and writing the whole tensor (RMSNorm alone: upcast, square, mean, scale, downcast, weight):
    StepTimeConstants.eager_traffic_factor times these bytes."""
    h, inter = arch.hidden_size, active_intermediate_size(arch)  # a MoE token's MLP width: its top-k experts'
    kv = arch.kv_width
    per_layer = ACT_FULL["h"] * h + ACT_FULL["I"] * inter + ACT_FULL["kv"] * kv
    passes = 2.0 * (1.0 + 2.0 + (1.0 if checkpointing else 0.0))
    return per_layer * arch.num_hidden_layers * passes


def lora_traffic_bytes_per_token(arch: ModelArch, targets: tuple[str, ...], checkpointing: bool) -> float:
    """LoRA's adapters are memory-bound (rank r << h): per adapted projection the forward reads the input (2 in bytes)
    and writes and re-reads the output to add it to the base's (3 x 2 out); backward moves twice that. Eager peft."""
    shapes = layer_linear_shapes(arch)
    # nn.Linear targets of the layers (a MoE's fused experts are adapted as 3-D parameters: their traffic is not counted)
    per_layer = sum(2.0 * shapes[t].in_features + 6.0 * shapes[t].out_features for t in targets if t in shapes)
    return per_layer * arch.num_hidden_layers * (1.0 + 2.0 + (1.0 if checkpointing else 0.0))


def dequant_bytes_per_pass(arch: ModelArch, double_quant: bool) -> float:
    """NF4 dequantisation before each matmul: read the 4-bit weights and constants, write the bf16 weight, which the
    matmul then reads (bitsandbytes dequantize_4bit; Dettmers et al. 2023 §3): (nf4 + 2 + 2) bytes per weight."""
    return param_counts(arch).linear_weights * (nf4_bytes_per_param(double_quant) + 4.0)


def optimizer_step_bytes(setup: TrainingSetup) -> float:
    """Bytes one optimizer step moves per unsharded replica: AdamW reads the gradient and reads and writes the weight
    and both moments (fused/foreach AdamW is memory-bound: Kingma & Ba 2015 update, one pass); mixed precision also
    reads and writes the fp32 master and writes the bf16 copy; clipping reads the gradients once more for their norm
    and scales them (read + write), and zeroing writes them."""
    numels = trainable_tensor_numels(setup)
    n = float(sum(numels))
    if setup.method == "full":
        weight, grad = 2.0, 2.0
        master = 0.0 if setup.precision == "bf16-pure" else 4.0
        moment = 2.0 if setup.precision == "bf16-pure" else 4.0
    else:
        weight = grad = moment = 4.0 if setup.adapter_dtype == "float32" else 2.0
        master = 0.0
    if setup.optimizer != "adamw":
        moment = 1.0
    update = n * (2 * weight + grad + 2 * 2 * moment + 2 * master)
    clip_zero = n * grad * 4
    return update + clip_zero


def weights_gathered_bytes(setup: TrainingSetup) -> float:
    """Bytes of the weights FSDP all-gathers per pass: the decoder's projections in their stored form (NF4 codes for
    QLoRA, as fsdp_qlora's bf16 quant storage packs them; their constants stay on every GPU,
    advisor.formulas.memory.unsharded_quant_constant_bytes) and everything else in bf16."""
    counts = param_counts(setup.arch)
    if setup.method == "qlora":
        return counts.linear_weights * NF4_DATA_BYTES + 2.0 * (counts.total - counts.linear_weights)
    return 2.0 * counts.total


def communication_bytes(setup: TrainingSetup, sharding: str) -> tuple[float, float, float]:
    """(per micro-batch over the interconnect, per micro-batch over the host link, per step over the interconnect).

    FSDP (ZeRO-3) all-gathers the weights for the forward and again for the backward and reduce-scatters the
    gradients, each moving (n-1)/n of the full tensor per GPU (ring algorithms; Rajbhandari et al. 2020 §7, 3x the
    data-parallel volume counting the forward gather). With CPU offload the shards also cross the host link (weights
    in for both passes, gradients out). DDP all-reduces the gradients once per step (no_sync during accumulation):
    2 (n-1)/n of their bytes (Patarasuk & Yuan 2009)."""
    n = setup.gpus
    if n == 1 or sharding == "none":
        return 0.0, 0.0, 0.0
    ring = (n - 1) / n
    grads = 2.0 * setup.trainable_params if setup.method == "full" or setup.adapter_dtype == "bfloat16" \
        else 4.0 * setup.trainable_params
    if sharding == "fsdp":
        weights = weights_gathered_bytes(setup)
        per_mb = (2.0 * weights + grads) * ring
        host = (2.0 * weights + grads) / n if setup.cpu_offload else 0.0
        return per_mb, host, 0.0
    return 0.0, 0.0, 2.0 * grads * ring


class Links(Struct, frozen=True):
    """The rates a collective over `ranks` GPUs runs at, bytes/s per GPU (after COMM_EFFICIENCY)."""
    ring: float             # a ring over all the ranks (FSDP's gathers, DDP's all-reduce)
    intra: float            # within one NVLink domain
    network: float          # one GPU's own share of the network between nodes
    network_gbps: float     # the same in Gb/s, before COMM_EFFICIENCY (as the catalog or --interconnect states it)
    nodes: int              # NVLink domains the ranks span (1: no network crossed)
    domain: int             # GPUs per NVLink domain that take part
    network_assumed: bool   # the catalog states no network for this GPU and none was given


def collective_links(gpu: Gpu, ranks: int, internode_gbps: float | None = None) -> Links:
    """Rates of the collectives over `ranks` GPUs of this kind. Within the NVLink domain (gpu.nvlink_domain) a ring
    runs at the GPU's link, interconnect_gbs (or its host link). A ring that spans domains crosses the network once per
    channel, and NCCL opens one channel per NIC (rail), so it runs at the slower of the link and the domain's network
    in all, domain x internode_gbps / 8 (nccl-tests#119: "theoretical performance is 100GB/s (200G x 4 / 8)" for a
    node of 8 A100s with 4 HDR NICs, measured 85-96 GB/s busbw; nccl-tests#290: "For NDR @ 400Gbps you should see
    46-48GB/s per NIC"). Latency is not modelled (large messages)."""
    intra = (gpu.interconnect_gbs or gpu.host_bandwidth / 1e9) * 1e9 * COMM_EFFICIENCY
    domain = min(ranks, gpu.nvlink_domain)
    nodes = -(-ranks // gpu.nvlink_domain)
    gbps = internode_gbps or gpu.internode_gbps
    network_gbps = gbps or ASSUMED_INTERNODE_GBPS
    network = network_gbps / 8.0 * 1e9 * COMM_EFFICIENCY
    ring = intra if nodes == 1 else min(intra, domain * network)
    return Links(ring, intra, network, network_gbps, nodes, domain, nodes > 1 and gbps is None)


def step_work(setup: TrainingSetup, sharding: str) -> StepWork:
    """The FLOPs and bytes of one optimizer step on one GPU (`sharding` as decided: none, ddp or fsdp)."""
    arch = setup.arch
    length = setup.mean_seq_len or setup.seq_len
    tokens = setup.tokens_per_micro_batch
    ckpt = setup.gradient_checkpointing
    lora = setup.trainable_params if setup.method != "full" else 0
    fixed = lora_traffic_bytes_per_token(arch, setup.lora_targets, ckpt) * tokens if setup.method != "full" else 0.0
    if setup.method == "qlora":
        fixed += dequant_bytes_per_pass(arch, setup.double_quant) * (3.0 + ckpt)  # forward, backward (2 matmuls), recompute
    fixed += moe_dispatch_bytes_per_token(arch, ckpt) * tokens
    comm, host, step_comm = communication_bytes(setup, sharding)
    opt = optimizer_step_bytes(setup) / (setup.gpus if sharding == "fsdp" else 1)
    return StepWork(
        micro_batches=setup.grad_accum, tokens_per_micro_batch=tokens,
        matmul_flops=dense_matmul_flops_per_token(arch, setup.method, lora, ckpt) * tokens,
        attention_flops=causal_attention_flops_per_token(arch, length, ckpt, setup.flash_attention) * tokens,
        elementwise_bytes=elementwise_bytes_per_token(arch, ckpt) * tokens, fixed_bytes=fixed,
        comm_bytes=comm, host_bytes=host, step_bytes=0.0 if setup.cpu_offload else opt, step_comm_bytes=step_comm,
        host_step_bytes=opt if setup.cpu_offload else 0.0,
        expert_flops=expert_matmul_flops_per_token(arch, setup.method, ckpt) * tokens,
        ranks=setup.gpus if sharding != "none" else 1, internode_gbps=setup.internode_gbps,
        tokens_per_expert=tokens_per_expert(arch, tokens), flash_attention=setup.flash_attention,
    )


def attention_fraction(gpu: Gpu, flash: bool, matmul: float) -> float:
    """Achieved fraction of dense peak for attention's T x T matmuls: the step's matmul fraction, capped at the fused
    kernel's published fraction on the GPU's generation (ATTENTION_KERNEL_FRACTION) when a fused kernel runs it."""
    cap = ATTENTION_KERNEL_FRACTION.get(gpu.generation or "") if flash else None
    return min(matmul, cap) if cap is not None else matmul


def matmul_fraction(tokens_per_micro_batch: float, c: StepTimeConstants) -> float:
    """Achieved fraction of dense peak for the step's matmuls: f_max n / (n + n_half) over the n tokens of a
    micro-batch (the M dimension of every projection). Small M leaves tiles and SMs idle and the weights' reads
    unamortised (a roofline: arithmetic intensity grows with M; Williams et al. 2009)."""
    n = tokens_per_micro_batch
    return c.matmul_fraction_max * n / (n + c.matmul_half_tokens)


class StepTime(Struct, frozen=True):
    """Seconds of one optimizer step on one GPU, by term."""
    matmul_s: float         # projections, routers, LM head (and a MoE's experts, also given apart in expert_s)
    attention_s: float
    memory_bound_s: float
    communication_s: float  # exposed beyond the compute it overlaps with
    optimizer_s: float
    fixed_s: float
    total_s: float
    tokens: float           # tokens one GPU processes in the step (padding included)
    expert_s: float = 0.0   # a MoE's routed experts' GEMMs (included in matmul_s)
    expert_fraction: float = 0.0  # the fraction of peak those GEMMs reach at tokens_per_expert rows
    communication_total_s: float = 0.0  # every collective's time, hidden behind compute or not
    nodes: int = 1                # NVLink domains the collectives span (above 1: over the network between nodes)
    network_gbps: float = 0.0     # the network per GPU assumed between them, Gb/s
    network_assumed: bool = False  # not stated by the catalog nor given (advisor.formulas.step_time.ASSUMED_INTERNODE_GBPS)

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.total_s


def step_seconds(work: StepWork, gpu: Gpu, fused: bool = False, c: StepTimeConstants = DEFAULT_STEP_TIME) -> StepTime:
    """One step's seconds: per micro-batch, matmuls at `matmul_fraction` of the dense peak, attention at
    `attention_fraction` (a MoE's
    experts at the fraction of their own GEMMs' rows, tokens_per_expert) plus the
    memory-bound bytes at the memory bandwidth; FSDP's gathers overlap with it (prefetch), so the micro-batch takes the
    longer of compute and communication (Zhao et al. 2023 §3.3); then the optimizer step's bytes at the memory
    bandwidth (on the host with CPU offload, HOST_DRAM_GBS_PER_GPU), DDP's all-reduce and the fixed cost. Collectives run at collective_links' ring rate (slower once they
    span NVLink domains). `fused`: elementwise kernels fused (torch.compile, Liger)."""
    frac = matmul_fraction(work.tokens_per_micro_batch, c)
    expert_frac = matmul_fraction(work.tokens_per_expert, c) if work.expert_flops else 0.0
    experts = work.expert_flops / (gpu.peak_flops * expert_frac) if work.expert_flops else 0.0
    matmul = work.matmul_flops / (gpu.peak_flops * frac) + experts
    attention = work.attention_flops / (gpu.peak_flops * attention_fraction(gpu, work.flash_attention, frac))
    bandwidth = gpu.memory_bandwidth_gbs * 1e9
    traffic = work.elementwise_bytes * (1.0 if fused else c.eager_traffic_factor) + work.fixed_bytes
    memory_bound = traffic / bandwidth
    links = collective_links(gpu, work.ranks, work.internode_gbps)
    link = links.ring
    comm = work.comm_bytes / link + work.host_bytes / (gpu.host_bandwidth * COMM_EFFICIENCY)
    compute = matmul + attention + memory_bound
    exposed = max(0.0, comm - compute)
    optimizer = (work.step_bytes / bandwidth + work.step_comm_bytes / link
                 + work.host_step_bytes / (HOST_DRAM_GBS_PER_GPU * 1e9))
    mb = work.micro_batches
    total = mb * (compute + exposed) + optimizer + c.step_fixed_s
    return StepTime(mb * matmul, mb * attention, mb * memory_bound, mb * exposed, optimizer, c.step_fixed_s, total,
                    mb * work.tokens_per_micro_batch, mb * experts, expert_frac,
                    mb * comm + work.step_comm_bytes / link, links.nodes,
                    links.network_gbps if links.nodes > 1 else 0.0, links.network_assumed)
