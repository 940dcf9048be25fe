"""The catalogs' base types: a GPU, a model architecture, an API price; each field checked on construction."""

from __future__ import annotations

from advisor.catalog.arch import HF_CONFIG_DEFAULTS, NESTED_CONFIG_KEYS, SUPPORTED_MODEL_TYPES, config_value, unsupported
from advisor.core.records import RecordError, bounded, record

@record
class Gpu:
    """One GPU type: what the estimators need to turn FLOPs and bytes into hours, dollars and GPU counts."""

    name: str
    aliases: list[str] = bounded(default_factory=list)
    memory_gib: float = bounded(gt=0, description="Device memory in GiB (2^30 bytes) as the device reports it: "
                              "torch.cuda.get_device_properties().total_memory (cudaDeviceProp.totalGlobalMem), which "
                              "is a few hundred MiB below nvidia-smi's total.")
    memory_reported: bool = bounded(True, description="memory_gib is a published device-reported figure (memory_source "
                                                   "quotes it); false: a conversion of the marketing figure.")
    memory_source: str = bounded("", description="Where memory_gib comes from (deviceQuery, a torch OOM message, ...).")
    memory_nvidia_smi_mib: float | None = bounded(None, description="nvidia-smi's total, MiB (informational).")
    cuda_context_gib: float = bounded(0.5, ge=0, description="Device memory the CUDA context (driver, lazily loaded "
                                    "kernels) takes outside PyTorch's allocator; see CUDA_CONTEXT_SOURCE.")
    peak_tflops_bf16: float = bounded(gt=0, description="Dense bf16 (or fp16 where bf16 is absent) tensor-core peak, TFLOP/s.")
    memory_bandwidth_gbs: float = bounded(gt=0, description="Memory bandwidth, GB/s.")
    interconnect: str = bounded("", description="The GPU-to-GPU link inside a node.")
    interconnect_gbs: float | None = bounded(None, gt=0, description="GPU-to-GPU bandwidth per GPU per direction, GB/s "
                                           "(NVLink datasheet figures are bidirectional and are halved).")
    interconnect_source: str = ""
    host_link_gbs: float | None = bounded(None, gt=0, description="Host (CPU) link per GPU per direction, GB/s: what "
                                        "CPU offload moves weights and states over. None: PCIe Gen4 x16.")
    price_usd_per_hour: float | None = bounded(None, ge=0, description="Reference on-demand price of one GPU, USD per "
                                             "hour; None where no dated, attributable price was found.")
    price_source: str = ""
    price_date: str = ""
    price_alternatives: list[str] = bounded(default_factory=list)
    bf16: bool = bounded(True, description="Whether the GPU supports bf16; if not, training runs in fp16.")
    uncertain: list[str] = bounded(default_factory=list, description="Fields whose value is not confirmed by a primary source.")
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


@record
class ModelArch:
    """A decoder-only transformer, dense or mixture-of-experts, with the field names of a Hugging Face config.json.

    advisor.catalog.arch.describe turns it into modules and shapes by model_type; fields left out take the transformers config
    class's default for that model_type (advisor.catalog.arch.HF_CONFIG_DEFAULTS), as AutoConfig would.
    """

    name: str = "custom"
    hub_id: str | None = None
    model_type: str = "llama"
    hidden_size: int = bounded(gt=0)
    intermediate_size: int = bounded(gt=0)
    num_hidden_layers: int = bounded(gt=0)
    num_attention_heads: int = bounded(gt=0)
    num_key_value_heads: int | None = bounded(None, gt=0)
    head_dim: int | None = bounded(None, gt=0)
    vocab_size: int = bounded(gt=0)
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    mlp_bias: bool = False
    max_position_embeddings: int = 4096
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    # mixture of experts (names as each family's config spells them)
    num_local_experts: int | None = bounded(None, ge=0, description="Routed experts per MoE layer (Mixtral, gpt-oss, Llama 4).")
    num_experts: int | None = bounded(None, ge=0, description="Routed experts per MoE layer (Qwen-MoE).")
    num_experts_per_tok: int | None = bounded(None, gt=0, description="Experts each token is routed to (top-k).")
    moe_intermediate_size: int | None = bounded(None, gt=0, description="One expert's MLP width (Qwen-MoE).")
    decoder_sparse_step: int | None = bounded(None, gt=0, description="Qwen-MoE: every n-th layer is MoE.")
    mlp_only_layers: tuple[int, ...] | None = bounded(None, description="Qwen-MoE: layers kept dense.")
    intermediate_size_mlp: int | None = bounded(None, gt=0, description="Llama 4: MLP width of its dense layers.")
    interleave_moe_layer_step: int | None = bounded(None, gt=0, description="Llama 4: every n-th layer is MoE.")
    moe_layers: tuple[int, ...] | None = bounded(None, description="Llama 4: the MoE layers, when listed.")
    router_aux_loss_coef: float | None = bounded(None, ge=0, description="Weight of the load-balancing loss.")
    # attention variants
    sliding_window: int | None = bounded(None, gt=0, description="Window of sliding-window attention layers.")
    layer_types: tuple[str, ...] | None = bounded(None, description="Per layer: full_attention or sliding_attention.")
    sliding_window_pattern: int | None = bounded(None, gt=0, description="Gemma 3 (older configs): every n-th layer is full.")
    attn_logit_softcapping: float | None = bounded(None, gt=0, description="Gemma 2: attention logits soft-capped at this.")
    final_logit_softcapping: float | None = bounded(None, gt=0, description="Gemma 2/3: output logits soft-capped at this.")
    query_pre_attn_scalar: int | None = bounded(None, gt=0, description="Gemma: attention scaled by this^-0.5.")
    vision_encoder_params: int | None = bounded(None, ge=0, description=(
        "A multimodal checkpoint's vision encoder and projector (advisor.catalog.arch.vision_encoder_params): weights a "
        "text fine-tune through AutoModelForCausalLM does not load. None: the checkpoint has none, or see "
        "vision_model_type."))
    vision_model_type: str | None = bounded(None, description=(
        "model_type of the checkpoint's vision encoder when it has one; set with vision_encoder_params None, it is "
        "one advisor does not count."))
    published_params: int | None = None
    published_total: float | None = bounded(None, gt=0, description="Total parameters as the source rounds them.")
    published_active: float | None = bounded(None, gt=0, description="Active parameters per token as the source gives them.")
    pretraining_tokens: float | None = bounded(None, description="Tokens the base model was pretrained on, where published.")
    source: str = ""
    date: str = ""

    def __post_init__(self):
        if self.model_type not in SUPPORTED_MODEL_TYPES:
            raise RecordError(("model_type",), str(unsupported(self.model_type)))

    @property
    def kv_heads(self) -> int:
        return self.num_key_value_heads or self.num_attention_heads

    @property
    def head_dim_resolved(self) -> int:
        return config_value(self, "head_dim") or self.hidden_size // self.num_attention_heads

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
        return out


_ATTENTION_BIAS_TYPES = ("qwen3", "qwen3_moe", "gemma2", "gemma3_text", "gpt_oss", "llama4_text")
_ARCH_EXTRA_FIELDS = ("num_local_experts num_experts num_experts_per_tok moe_intermediate_size decoder_sparse_step "
                      "mlp_only_layers intermediate_size_mlp interleave_moe_layer_step moe_layers router_aux_loss_coef "
                      "sliding_window layer_types sliding_window_pattern attn_logit_softcapping final_logit_softcapping "
                      "query_pre_attn_scalar").split()


@record
class ApiPrice:
    """A hosted model's list price per million tokens, dated; retired models are marked (never the default)."""

    name: str
    vendor: str
    input_usd_per_mtok: float = bounded(ge=0)
    output_usd_per_mtok: float = bounded(ge=0)
    source: str
    date: str
    url: str | None = None
    quote: str | None = bounded(None, description="The price line as the source printed it.")
    retired: bool = bounded(False, description="Shut down, or deprecated with a shutdown date announced.")
    shutdown_date: str | None = None
    retired_source: str | None = None

    @property
    def price_dated(self) -> str:
        """When the price was taken: the entry's date."""
        return self.date
