"""The catalogs' base types: a GPU, a model architecture, an API price; frozen msgspec Structs whose constraints
(`msgspec.Meta`) are checked where entries are read (advisor.catalog.load) and hashable, so caches can key on them."""


from typing import Annotated, Literal

from msgspec import Meta, Struct

from advisor.catalog.arch import COUNTED_MODEL_TYPES, SAME_ARCHITECTURE, SUPPORTED_MODEL_TYPES, config_value, unsupported

# The CUDA context a GPU entry assumes where it gives none (see CUDA_CONTEXT_SOURCE below).
DEFAULT_CUDA_CONTEXT_GIB = 0.5


PriceBasis = Literal["hyperscaler-on-demand", "gpu-cloud-on-demand", "marketplace", "spot"]


class PriceQuote(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One dated, sourced price of one GPU for an hour, on a stated basis: a hyperscaler's on-demand list price (AWS,
    GCP, Azure, OCI), a GPU cloud's on-demand price (Lambda, RunPod Secure, CoreWeave, Crusoe, ...), a marketplace's
    (RunPod Community, Vast.ai: hosts of varying reliability) or spot (pre-emptible)."""
    basis: PriceBasis
    usd_per_hour: Annotated[float, Meta(ge=0)]
    source: str
    date: str


class Gpu(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One GPU type: what the estimators need to turn FLOPs and bytes into hours, dollars and GPU counts."""

    name: str
    aliases: tuple[str, ...] = ()
    memory_gib: Annotated[float, Meta(gt=0, description=(
        "Device memory in GiB (2^30 bytes) as the device reports it: torch.cuda.get_device_properties().total_memory "
        "(cudaDeviceProp.totalGlobalMem), which is a few hundred MiB below nvidia-smi's total."))]
    memory_reported: Annotated[bool, Meta(description="memory_gib is a published device-reported figure (memory_source "
                                                      "quotes it); false: a conversion of the marketing figure.")] = True
    memory_source: Annotated[str, Meta(description="Where memory_gib comes from (deviceQuery, a torch OOM message, ...).")] = ""
    memory_nvidia_smi_mib: Annotated[float | None, Meta(description="nvidia-smi's total, MiB (informational).")] = None
    cuda_context_gib: Annotated[float, Meta(ge=0, description=(
        "Device memory the CUDA context (driver, lazily loaded kernels) takes outside PyTorch's allocator; see "
        "CUDA_CONTEXT_SOURCE."))] = DEFAULT_CUDA_CONTEXT_GIB
    peak_tflops_bf16: Annotated[float, Meta(gt=0, description="Dense bf16 (or fp16 where bf16 is absent) tensor-core "
                                                              "peak, TFLOP/s.")]
    memory_bandwidth_gbs: Annotated[float, Meta(gt=0, description="Memory bandwidth, GB/s.")]
    interconnect: Annotated[str, Meta(description="The GPU-to-GPU link inside a node.")] = ""
    interconnect_gbs: Annotated[float, Meta(gt=0, description=(
        "GPU-to-GPU bandwidth per GPU per direction, GB/s (NVLink datasheet figures are bidirectional and are "
        "halved)."))] | None = None
    interconnect_source: str = ""
    generation: Annotated[str, Meta(description=(
        "Architecture generation (Volta, Turing, Ampere, Ada, Hopper, Blackwell, CDNA3, CDNA4): the step-time model's "
        "constants and error bands are per generation."))] = ""
    nvlink_domain: Annotated[int, Meta(gt=0, description=(
        "GPUs that reach each other over `interconnect_gbs`: an HGX/DGX or OAM node's 8, an NVL72 rack's 72; PCIe "
        "cards: a node of up to 8 on its PCIe switches. Beyond it traffic crosses the inter-node network."))] = 8
    internode_gbps: Annotated[float, Meta(gt=0, description=(
        "Scale-out network per GPU to GPUs outside the NVLink domain, Gb/s (a DGX H100 has one 400 Gb/s ConnectX-7 "
        "port per GPU). None: not stated for this class of machine (the estimate assumes "
        "advisor.formulas.step_time.ASSUMED_INTERNODE_GBPS and says so; give --interconnect)."))] | None = None
    internode_source: str = ""
    host_link_gbs: Annotated[float, Meta(gt=0, description=(
        "Host (CPU) link per GPU per direction, GB/s: what CPU offload moves weights and states over. None: PCIe Gen4 "
        "x16."))] | None = None
    price_usd_per_hour: Annotated[float, Meta(ge=0, description=(
        "Reference on-demand price of one GPU, USD per hour; None where no dated, attributable price was "
        "found."))] | None = None
    price_source: str = ""
    price_date: str = ""
    price_basis: Annotated[PriceBasis | Literal[""], Meta(description=(
        "The basis of price_usd_per_hour (PriceQuote.basis); '' where not classified."))] = ""
    price_alternatives: tuple[str, ...] = ()
    prices: Annotated[tuple[PriceQuote, ...], Meta(description="Every dated price found, by basis.")] = ()
    bf16: Annotated[bool, Meta(description="Whether the GPU supports bf16; if not, training runs in fp16.")] = True
    uncertain: Annotated[tuple[str, ...], Meta(description="Fields whose value is not confirmed by a primary source.")] = ()
    notes: str = ""
    source: str
    date: str

    @property
    def price_dated(self) -> str:
        """When the price was taken (price_date; the entry's date, that of its specifications, where none is given)."""
        return self.price_date or self.date

    @property
    def peak_flops(self) -> float:
        return self.peak_tflops_bf16 * 1e12

    @property
    def usable_memory_gib(self) -> float:
        """What a training process can allocate: the device's memory less the CUDA context."""
        return self.memory_gib - self.cuda_context_gib

    @property
    def host_bandwidth(self) -> float:
        """Host link bytes/s (PCIE_GEN4_X16_GBS where the catalog gives none)."""
        return (self.host_link_gbs or PCIE_GEN4_X16_GBS) * 1e9


# The CUDA context lives inside total_memory but outside PyTorch's allocator: "the currently used ~300MB ... Starting
# with 11.7 CUDA implemented lazy kernel/module loading" (ptrblck, pytorch/pytorch#107667, 2023-08); NCCL and cuBLAS
# add workspaces on top (vLLM's profiler on an H100: non-torch memory 1.79 GiB at TP=1, vllm-project/vllm PR #10511).
# Each Gpu carries 0.5 GiB by default (cuda_context_gib); the estimate's overhead covers the workspaces.
CUDA_CONTEXT_SOURCE = "ptrblck, pytorch/pytorch#107667 (2023-08): ~300 MB with lazy loading (CUDA >= 11.7)"
# PCIe 4.0 x16: 16 GT/s x 16 lanes, 128b/130b: 31.5 GB/s per direction (PCI-SIG PCIe 4.0 specification).
PCIE_GEN4_X16_GBS = 32.0


class ModelArch(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A decoder-only transformer, dense or mixture-of-experts, with the field names of a Hugging Face config.json.

    advisor.catalog.arch.describe turns it into modules and shapes by model_type; fields left out take the transformers config
    class's default for that model_type (advisor.catalog.arch.HF_CONFIG_DEFAULTS), as AutoConfig would.
    """

    name: str = "custom"
    hub_id: str | None = None
    model_type: str = "llama"
    hidden_size: Annotated[int, Meta(gt=0)]
    intermediate_size: Annotated[int, Meta(gt=0)]
    num_hidden_layers: Annotated[int, Meta(gt=0)]
    num_attention_heads: Annotated[int, Meta(gt=0)]
    num_key_value_heads: Annotated[int, Meta(gt=0)] | None = None
    head_dim: Annotated[int, Meta(gt=0)] | None = None
    vocab_size: Annotated[int, Meta(gt=0)]
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    mlp_bias: bool = False
    max_position_embeddings: int = 4096
    rope_theta: Annotated[float, Meta(gt=0, description="RoPE base; 0 makes every rotary frequency infinite (NaN "
                                                         "from the first step).")] = 10000.0
    rms_norm_eps: Annotated[float, Meta(ge=0)] = 1e-5
    # mixture of experts (names as each family's config spells them)
    num_local_experts: Annotated[int, Meta(ge=0, description="Routed experts per MoE layer (Mixtral, gpt-oss, "
                                                             "Llama 4).")] | None = None
    num_experts: Annotated[int, Meta(ge=0, description="Routed experts per MoE layer (Qwen-MoE).")] | None = None
    num_experts_per_tok: Annotated[int, Meta(gt=0, description="Experts each token is routed to (top-k).")] | None = None
    moe_intermediate_size: Annotated[int, Meta(gt=0, description="One expert's MLP width (Qwen-MoE).")] | None = None
    decoder_sparse_step: Annotated[int, Meta(gt=0, description="Qwen-MoE: every n-th layer is MoE.")] | None = None
    mlp_only_layers: Annotated[tuple[int, ...] | None, Meta(description="Qwen-MoE: layers kept dense.")] = None
    intermediate_size_mlp: Annotated[int, Meta(gt=0, description="Llama 4: MLP width of its dense layers.")] | None = None
    interleave_moe_layer_step: Annotated[int, Meta(gt=0, description="Llama 4: every n-th layer is MoE.")] | None = None
    moe_layers: Annotated[tuple[int, ...] | None, Meta(description="Llama 4: the MoE layers, when listed.")] = None
    router_aux_loss_coef: Annotated[float, Meta(ge=0, description="Weight of the load-balancing loss.")] | None = None
    n_routed_experts: Annotated[int, Meta(gt=0, description="Routed experts per MoE layer (GLM-4-MoE, DeepSeek-V3).")] | None = None
    n_shared_experts: Annotated[int, Meta(ge=0, description="Shared experts, one MLP of n x moe_intermediate_size (GLM-4-MoE, "
                                                            "DeepSeek-V3).")] | None = None
    first_k_dense_replace: Annotated[int, Meta(ge=0, description="The first k layers are dense (GLM-4-MoE, "
                                                                 "DeepSeek-V3).")] | None = None
    use_qk_norm: Annotated[bool, Meta(description="GLM-4-MoE: per-head q/k RMSNorms.")] | None = None
    # gated DeltaNet linear attention and gated full attention (Qwen3.5-MoE)
    linear_conv_kernel_dim: Annotated[int, Meta(gt=0, description="Qwen3.5: causal conv kernel of linear attention.")] | None = None
    linear_key_head_dim: Annotated[int, Meta(gt=0, description="Qwen3.5: linear attention's key head width.")] | None = None
    linear_value_head_dim: Annotated[int, Meta(gt=0, description="Qwen3.5: linear attention's value head width.")] | None = None
    linear_num_key_heads: Annotated[int, Meta(gt=0, description="Qwen3.5: linear attention's key heads.")] | None = None
    linear_num_value_heads: Annotated[int, Meta(gt=0, description="Qwen3.5: linear attention's value heads.")] | None = None
    shared_expert_intermediate_size: Annotated[int, Meta(gt=0, description="Qwen3.5-MoE: the shared expert's MLP width.")] | None = None
    # multi-head latent attention (DeepSeek-V3, Kimi-K2)
    q_lora_rank: Annotated[int, Meta(gt=0, description="MLA: rank of the query's low-rank projection.")] | None = None
    kv_lora_rank: Annotated[int, Meta(gt=0, description="MLA: rank of the compressed key-value latent.")] | None = None
    qk_nope_head_dim: Annotated[int, Meta(gt=0, description="MLA: per-head query/key width without RoPE.")] | None = None
    qk_rope_head_dim: Annotated[int, Meta(gt=0, description="MLA: per-head query/key width with RoPE.")] | None = None
    v_head_dim: Annotated[int, Meta(gt=0, description="MLA: per-head value width.")] | None = None
    # attention variants
    sliding_window: Annotated[int, Meta(gt=0, description="Window of sliding-window attention layers.")] | None = None
    layer_types: Annotated[tuple[str, ...] | None, Meta(description="Per layer: full_attention or "
                                                                    "sliding_attention.")] = None
    sliding_window_pattern: Annotated[int, Meta(gt=0, description="Gemma 3 (older configs): every n-th layer is "
                                                                  "full.")] | None = None
    attn_logit_softcapping: Annotated[float, Meta(gt=0, description="Gemma 2: attention logits soft-capped at "
                                                                    "this.")] | None = None
    final_logit_softcapping: Annotated[float, Meta(gt=0, description="Gemma 2/3: output logits soft-capped at "
                                                                     "this.")] | None = None
    query_pre_attn_scalar: Annotated[int, Meta(gt=0, description="Gemma: attention scaled by this^-0.5.")] | None = None
    vision_encoder_params: Annotated[int, Meta(ge=0, description=(
        "A multimodal checkpoint's vision encoder and projector (advisor.catalog.arch.vision_encoder_params): weights a "
        "text fine-tune through AutoModelForCausalLM does not load. None: the checkpoint has none, or see "
        "vision_model_type."))] | None = None
    vision_model_type: Annotated[str | None, Meta(description=(
        "model_type of the checkpoint's vision encoder when it has one; set with vision_encoder_params None, it is "
        "one advisor does not count."))] = None
    published_params: int | None = None
    published_total: Annotated[float, Meta(gt=0, description="Total parameters as the source rounds them.")] | None = None
    published_active: Annotated[float, Meta(gt=0, description="Active parameters per token as the source gives "
                                                              "them.")] | None = None
    pretraining_tokens: Annotated[float | None, Meta(description="Tokens the base model was pretrained on, where "
                                                                 "published.")] = None
    source: str = ""
    date: str = ""

    def __post_init__(self):
        """An unknown model_type, and key/value heads that do not divide the query heads (grouped-query attention
        shares each key/value head among an equal number of query heads), are refused (msgspec reports these
        ValueErrors as validation errors)."""
        if self.model_type not in SUPPORTED_MODEL_TYPES and self.model_type not in COUNTED_MODEL_TYPES:
            raise unsupported(self.model_type)
        if self.num_key_value_heads and self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(f"num_key_value_heads {self.num_key_value_heads} does not divide num_attention_heads "
                             f"{self.num_attention_heads} (each key/value head serves an equal group of query heads)")

    @property
    def kv_heads(self) -> int:
        return self.num_key_value_heads or self.num_attention_heads

    @property
    def head_dim_resolved(self) -> int:
        return config_value(self, "head_dim") or self.hidden_size // self.num_attention_heads

    @property
    def attention_width(self) -> float:
        """Per token per layer, the width attention's two matmuls run over: heads x head_dim, or for multi-head
        latent attention the mean of the query/key width (nope + rope) and the value width, per head."""
        if self.model_type in ("deepseek_v3", "kimi_k2"):
            qk = config_value(self, "qk_nope_head_dim") + config_value(self, "qk_rope_head_dim")
            return self.num_attention_heads * (qk + config_value(self, "v_head_dim")) / 2
        return self.num_attention_heads * self.head_dim_resolved

    @property
    def kv_width(self) -> float:
        """Key and value width per token per layer as the attention kernel receives them (mean of the two): kv heads x
        head_dim, or for latent attention the per-head keys (nope + rope) and values it expands to."""
        if self.model_type in ("deepseek_v3", "kimi_k2"):
            return self.attention_width
        return self.kv_heads * self.head_dim_resolved

    @property
    def qkv_bias(self) -> bool:
        # Qwen2 hard-codes bias on q/k/v (and not on o); Llama's `attention_bias` puts it on all four.
        return self.model_type == "qwen2" or self.attention_bias

    @property
    def o_bias(self) -> bool:
        return self.model_type != "qwen2" and self.attention_bias

    def hf_config_dict(self) -> dict:
        """The fields a transformers config class takes, to build this architecture for real (the same values
        advisor.catalog.arch counts with)."""
        keys = (
            "model_type hidden_size intermediate_size num_hidden_layers num_attention_heads num_key_value_heads "
            "head_dim vocab_size tie_word_embeddings max_position_embeddings rope_theta rms_norm_eps"
        ).split()
        out = {k: getattr(self, k) for k in keys}
        out["num_key_value_heads"] = self.kv_heads
        out["head_dim"] = self.head_dim_resolved
        if self.model_type in ("llama",):
            out["attention_bias"] = self.attention_bias
            out["mlp_bias"] = self.mlp_bias
        elif self.model_type in _ATTENTION_BIAS_TYPES:
            out["attention_bias"] = self.attention_bias
        if self.model_type == "phi3" and self.vocab_size <= 32000:
            out["pad_token_id"] = None  # Phi3Config's default pad id (32000) must lie inside a small vocabulary
        for key in _ARCH_EXTRA_FIELDS:
            value = config_value(self, key)
            if value is not None:
                out[key] = list(value) if isinstance(value, tuple) else value
        out["model_type"] = SAME_ARCHITECTURE.get(self.model_type, self.model_type)  # transformers' class for it
        return out


_ATTENTION_BIAS_TYPES = ("qwen3", "qwen3_moe", "gemma2", "gemma3_text", "gpt_oss", "llama4_text", "olmo2", "glm4_moe",
                         "deepseek_v3", "kimi_k2", "qwen3_5_moe_text")
_ARCH_EXTRA_FIELDS = ("num_local_experts num_experts num_experts_per_tok moe_intermediate_size decoder_sparse_step "
                      "mlp_only_layers intermediate_size_mlp interleave_moe_layer_step moe_layers router_aux_loss_coef "
                      "sliding_window layer_types sliding_window_pattern attn_logit_softcapping final_logit_softcapping "
                      "query_pre_attn_scalar n_routed_experts n_shared_experts first_k_dense_replace use_qk_norm q_lora_rank "
                      "kv_lora_rank qk_nope_head_dim qk_rope_head_dim v_head_dim linear_conv_kernel_dim linear_key_head_dim "
                      "linear_value_head_dim linear_num_key_heads linear_num_value_heads "
                      "shared_expert_intermediate_size").split()


class ApiPrice(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A hosted model's list price per million tokens, dated; retired models are marked (never the default)."""

    name: str
    vendor: str
    input_usd_per_mtok: Annotated[float, Meta(ge=0)]
    output_usd_per_mtok: Annotated[float, Meta(ge=0)]
    source: str
    date: str
    url: str | None = None
    quote: Annotated[str | None, Meta(description="The price line as the source printed it.")] = None
    retired: Annotated[bool, Meta(description="Shut down, or deprecated with a shutdown date announced.")] = False
    shutdown_date: str | None = None
    retired_source: str | None = None
    replacement: Annotated[str | None, Meta(description=(
        "The catalog API the vendor names as a retired model's successor (retired_source quotes it)."))] = None

    @property
    def price_dated(self) -> str:
        """When the price was taken: the entry's date."""
        return self.date
