"""What a Hugging Face architecture is made of, read from its config fields: a small description the counts use.

`describe(arch)` dispatches on `model_type` to the modules transformers (5.x) builds for one decoder layer, with their
shapes: attention (q/k/v/o or Phi-3's fused qkv_proj; GQA heads, head_dim, q/k norms, sliding-window layers), the MLP
(gated, or Phi-3's fused gate_up_proj), and a mixture of experts where there is one (routed experts stored as fused
3-D parameters, experts per token, a shared expert, the router, which layers are MoE). An unknown model_type is refused
in one line naming what is supported: it is never counted as if it were a Llama.

Each builder follows the model's modeling file in transformers (models/<type>/modeling_<type>.py); the counts they give
are checked to the parameter against the real modules, and peft's adapters on them, in tests/advisor/test_arch.py.
This module reads only fields of a ModelArch (advisor.catalog), which imports nothing from here but the names below.
"""

import functools
from typing import Any

from msgspec import Struct

from advisor.core.errors import AdvisorError

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3", "qwen3_moe", "mixtral", "gemma2", "gemma3_text", "phi3",
                         "gpt_oss", "llama4_text", "olmo2", "glm4_moe", "deepseek_v3",
                         "kimi_k2", "qwen3_5_moe_text")

# Defaults of the transformers 5.x config classes (configuration_<type>.py) for fields a config.json may omit and
# that change a parameter count; a config read from disk starts from these, as AutoConfig does. A test compares this
# table with the config classes themselves.
HF_CONFIG_DEFAULTS: dict[str, dict] = {
    "llama": {"tie_word_embeddings": False, "attention_bias": False, "mlp_bias": False},
    "mistral": {"tie_word_embeddings": False},
    "qwen2": {"tie_word_embeddings": False},
    "qwen3": {"tie_word_embeddings": False, "attention_bias": False, "head_dim": 128},
    "qwen3_moe": {"tie_word_embeddings": False, "attention_bias": False, "num_experts": 128, "num_experts_per_tok": 8,
                  "moe_intermediate_size": 768, "decoder_sparse_step": 1, "mlp_only_layers": ()},
    "mixtral": {"tie_word_embeddings": False, "num_local_experts": 8, "num_experts_per_tok": 2},
    "gemma2": {"tie_word_embeddings": True, "attention_bias": False, "head_dim": 256, "sliding_window": 4096},
    "gemma3_text": {"tie_word_embeddings": True, "attention_bias": False, "head_dim": 256, "sliding_window": 4096},
    "phi3": {"tie_word_embeddings": False},
    "gpt_oss": {"tie_word_embeddings": False, "attention_bias": True, "head_dim": 64, "num_local_experts": 128,
                "num_experts_per_tok": 4, "sliding_window": 128},
    "llama4_text": {"tie_word_embeddings": False, "attention_bias": False, "num_local_experts": 16,
                    "num_experts_per_tok": 1, "intermediate_size_mlp": 16384, "interleave_moe_layer_step": 1},
    "olmo2": {"tie_word_embeddings": False, "attention_bias": False},
    "glm4_moe": {"tie_word_embeddings": False, "attention_bias": False, "n_routed_experts": 128, "n_shared_experts": 1,
                 "num_experts_per_tok": 8, "moe_intermediate_size": 1408, "first_k_dense_replace": 1,
                 "use_qk_norm": False},
    "deepseek_v3": {"tie_word_embeddings": False, "attention_bias": False, "n_routed_experts": 256, "n_shared_experts": 1,
                    "num_experts_per_tok": 8, "moe_intermediate_size": 2048, "first_k_dense_replace": 3,
                    "q_lora_rank": 1536, "kv_lora_rank": 512, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64,
                    "v_head_dim": 128},
}
HF_CONFIG_DEFAULTS["qwen3_5_moe_text"] = {
    "tie_word_embeddings": False, "attention_bias": False, "head_dim": 256, "linear_conv_kernel_dim": 4,
    "linear_key_head_dim": 128, "linear_value_head_dim": 128, "linear_num_key_heads": 16, "linear_num_value_heads": 32,
    "moe_intermediate_size": 512, "shared_expert_intermediate_size": 512, "num_experts_per_tok": 8, "num_experts": 256}
# Qwen3.5's config, without layer_types: every full_attention_interval-th layer is full attention, the rest linear
# (transformers' Qwen3_5MoeTextConfig.__post_init__ default interval)
QWEN3_5_FULL_ATTENTION_INTERVAL = 4
# Kimi-K2 is DeepSeek-V3's architecture under its own model_type ("Kimi-K2 reuses DeepSeekV3CausalLM ... we set
# "model_type": "kimi_k2" in config.json"; Moonshot's deployment guide): counted, and built, as deepseek_v3.
HF_CONFIG_DEFAULTS["kimi_k2"] = HF_CONFIG_DEFAULTS["deepseek_v3"]
SAME_ARCHITECTURE = {"kimi_k2": "deepseek_v3"}

# Wrappers whose config.json nests the language model (multimodal models): the key that holds it.
NESTED_CONFIG_KEYS = ("text_config", "llm_config", "language_config")


class Linear(Struct, frozen=True):
    """One nn.Linear of a decoder layer, named as transformers names the module (peft's target names)."""
    name: str
    in_features: int
    out_features: int
    bias: bool = False

    @property
    def weights(self) -> int:
        return self.in_features * self.out_features

    @property
    def params(self) -> int:
        return self.weights + (self.out_features if self.bias else 0)


class Experts(Struct, frozen=True):
    """Routed experts of one MoE layer, stored fused as transformers 5.x does: gate_up_proj (E, h, 2I) and down_proj
    (E, I, h), with biases for gpt-oss. `peft_names` are the per-expert module names peft 0.22 maps onto these fused
    parameters (its transformers_weight_conversion: Mixtral's w1/w3/w2, Qwen-MoE's gate/up/down_proj); None where peft
    does not reach the experts through target_modules (gpt-oss, Llama 4)."""
    count: int
    per_token: int
    hidden: int
    intermediate: int
    bias: bool = False
    peft_names: tuple[tuple[str, ...], tuple[str, ...]] | None = None  # (names fused into gate_up_proj, down_proj's)

    @property
    def weights_per_expert(self) -> int:
        return 3 * self.hidden * self.intermediate

    @property
    def params_per_expert(self) -> int:
        return self.weights_per_expert + ((2 * self.intermediate + self.hidden) if self.bias else 0)

    @property
    def params(self) -> int:
        return self.count * self.params_per_expert


class Router(Struct, frozen=True):
    """The linear gate that scores experts per token (E x h, a bias for gpt-oss). `peft` says how peft's LoRA reaches
    it: "parameter" (the router weight as a target parameter, name `gate`), "linear" (an nn.Linear subclass, name
    `router`) or None (a custom module peft's all-linear skips)."""
    name: str
    experts: int
    hidden: int
    bias: bool = False
    peft: str | None = None

    @property
    def params(self) -> int:
        return self.experts * self.hidden + (self.experts if self.bias else 0)


class Layer(Struct, frozen=True):
    """One decoder layer: its linears (attention, then the dense MLP or the shared expert), routed experts and router
    if it is a MoE layer, the parameters of its norms and attention sinks, and its attention window (None: full)."""
    attention: tuple[Linear, ...]
    mlp: tuple[Linear, ...]
    experts: Experts | None = None
    router: Router | None = None
    small_tensors: tuple[int, ...] = ()  # element counts of its norm weights and attention sinks
    sliding_window: int | None = None
    linear_attention: bool = False  # a linear-attention (gated DeltaNet) layer: no T x T scores

    @property
    def small_params(self) -> int:
        return sum(self.small_tensors)

    @property
    def linears(self) -> tuple[Linear, ...]:
        return self.attention + self.mlp

    @property
    def params(self) -> int:
        return (sum(x.params for x in self.linears) + (self.experts.params if self.experts else 0)
                + (self.router.params if self.router else 0) + self.small_params)


class Architecture(Struct, frozen=True):
    """A decoder-only model as the estimators see it: embeddings, layers, final norm."""
    model_type: str
    hidden_size: int
    vocab_size: int
    tied_embeddings: bool
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    gated_mlp: bool
    fused_projections: bool
    layers: tuple[Layer, ...]
    final_norm: int
    peft_converts_moe: bool = False  # peft rewrites per-expert target names onto the fused expert parameters

    @property
    def is_moe(self) -> bool:
        return any(layer.experts for layer in self.layers)

    @property
    def moe_layers(self) -> tuple[int, ...]:
        return tuple(i for i, layer in enumerate(self.layers) if layer.experts)

    @property
    def attention_kind(self) -> str:
        """mha, gqa or mqa, and whether some layers attend within a sliding window."""
        if self.model_type in ("deepseek_v3", "kimi_k2"):
            return "mla (multi-head latent attention)"
        kind = ("mha" if self.num_key_value_heads == self.num_attention_heads
                else "mqa" if self.num_key_value_heads == 1 else "gqa")
        windows = {layer.sliding_window for layer in self.layers if layer.sliding_window}
        return kind + (f" + sliding window {min(windows)} on {sum(1 for l in self.layers if l.sliding_window)}"
                       f"/{len(self.layers)} layers" if windows else "")

    def summary(self) -> str:
        """One line for people: attention, MLP, experts."""
        mlp = ("fused gate_up" if self.fused_projections else "gated") if self.gated_mlp else "plain"
        parts = [f"{self.model_type}: {len(self.layers)} layers, {self.attention_kind}, head_dim {self.head_dim}",
                 f"{mlp} MLP", "tied embeddings" if self.tied_embeddings else "untied embeddings"]
        if self.is_moe:
            e = next(layer.experts for layer in self.layers if layer.experts)
            shared = " + shared expert" if any(layer.mlp and layer.experts for layer in self.layers) else ""
            parts.append(f"MoE on {len(self.moe_layers)}/{len(self.layers)} layers: {e.count} experts, top-{e.per_token}"
                         f"{shared}")
        return ", ".join(parts)


def unsupported(model_type: str | None) -> AdvisorError:
    return AdvisorError(f"model_type {model_type!r} is not supported (the estimate would be a guess); supported: "
                        f"{', '.join(SUPPORTED_MODEL_TYPES)}; or set RIGHTSIZE_COUNT_WITH_TRANSFORMERS=1 to count it "
                        "through transformers' own model code (installed)")


# Architectures counted through transformers' model code (advisor.catalog.counted), by the ModelArch they were
# counted for: describe() returns them; a model_type in COUNTED_MODEL_TYPES is accepted by ModelArch.
_COUNTED: dict = {}
COUNTED_MODEL_TYPES: set[str] = set()


def register_counted(model_arch, architecture: "Architecture") -> None:
    """Remember an architecture counted through transformers for its ModelArch (this process only)."""
    _COUNTED[model_arch] = architecture


def counted(arch) -> bool:
    """The architecture was counted through transformers, not described here."""
    return arch in _COUNTED


# Counted MoE architectures whose LoRA counts could not be checked against peft: LoRA estimates are refused for them.
_LORA_UNVERIFIED: set = set()


def mark_lora_unverified(model_arch) -> None:
    _LORA_UNVERIFIED.add(model_arch)


def lora_unverified(arch) -> bool:
    return arch in _LORA_UNVERIFIED


def config_value(arch, name: str) -> Any:  # a field of any type: counts, lists, flags
    """A config field as transformers would see it: the value given, else the config class's default for this
    model_type (HF_CONFIG_DEFAULTS), else None. The counts and the model the runner builds both read fields this way."""
    value = getattr(arch, name, None)
    return HF_CONFIG_DEFAULTS.get(arch.model_type, {}).get(name) if value is None else value


_get = config_value


def _attention(arch, qkv_bias: bool, o_bias: bool, fused_qkv: bool = False) -> tuple[Linear, ...]:
    h, hd = arch.hidden_size, _get(arch, "head_dim") or arch.hidden_size // arch.num_attention_heads
    q, kv = arch.num_attention_heads * hd, (arch.num_key_value_heads or arch.num_attention_heads) * hd
    o = Linear("o_proj", q, h, o_bias)
    if fused_qkv:
        return (Linear("qkv_proj", h, q + 2 * kv, qkv_bias), o)
    return (Linear("q_proj", h, q, qkv_bias), Linear("k_proj", h, kv, qkv_bias), Linear("v_proj", h, kv, qkv_bias), o)


def _gated_mlp(h: int, inter: int, bias: bool = False) -> tuple[Linear, ...]:
    return (Linear("gate_proj", h, inter, bias), Linear("up_proj", h, inter, bias), Linear("down_proj", inter, h, bias))


# Gemma 3's config, without layer_types: every sliding_window_pattern-th layer is full (transformers'
# Gemma3TextConfig._sliding_window_pattern default)
GEMMA3_SLIDING_WINDOW_PATTERN = 6


def _sliding_layers(arch) -> list[int | None]:
    """Window per layer as transformers' config classes lay it out: layer_types when given; else Gemma 2's and
    gpt-oss's alternation (even layers slide) and Gemma 3's pattern (every 6th layer full), with the config
    class's default window where the config gives none; else no sliding layer (Mistral's all-layer window is
    applied by the caller)."""
    n, window = arch.num_hidden_layers, config_value(arch, "sliding_window")
    if arch.layer_types:
        return [window if t == "sliding_attention" else None for t in arch.layer_types]
    if arch.model_type in ("gemma2", "gpt_oss") and window:
        return [window if i % 2 == 0 else None for i in range(n)]
    if arch.model_type == "gemma3_text" and window:
        pattern = arch.sliding_window_pattern or GEMMA3_SLIDING_WINDOW_PATTERN
        return [None if (i + 1) % pattern == 0 else window for i in range(n)]
    return [None] * n


def _moe_layer(arch, i: int) -> bool | None:
    """Whether layer i is a mixture-of-experts layer where the model_type interleaves them (Qwen-MoE's
    decoder_sparse_step and mlp_only_layers, Llama 4's interleave_moe_layer_step or moe_layers); None where every
    layer is alike (dense, or MoE throughout)."""
    if arch.model_type == "qwen3_moe":
        e = _get(arch, "num_experts")
        return i not in (_get(arch, "mlp_only_layers") or ()) and e > 0 and (i + 1) % _get(arch, "decoder_sparse_step") == 0
    if arch.model_type in ("glm4_moe", "deepseek_v3", "kimi_k2"):
        return i >= _get(arch, "first_k_dense_replace")
    if arch.model_type == "llama4_text":
        step = _get(arch, "interleave_moe_layer_step")
        return i in (arch.moe_layers if arch.moe_layers is not None else range(step - 1, arch.num_hidden_layers, step))
    return None


def _attention_types(arch) -> list[str]:
    """Per layer, Qwen3.5's full_attention or linear_attention (layer_types, or every
    QWEN3_5_FULL_ATTENTION_INTERVAL-th layer full as its config class lays them out); "" for the other families."""
    if arch.model_type != "qwen3_5_moe_text":
        return [""] * arch.num_hidden_layers
    if arch.layer_types:
        return list(arch.layer_types)
    return ["full_attention" if (j + 1) % QWEN3_5_FULL_ATTENTION_INTERVAL == 0 else "linear_attention"
            for j in range(arch.num_hidden_layers)]


def _build(arch) -> Architecture:
    mt, h, n = arch.model_type, arch.hidden_size, arch.num_hidden_layers
    hd = _get(arch, "head_dim") or h // arch.num_attention_heads
    kv_heads = arch.num_key_value_heads or arch.num_attention_heads
    bias = bool(_get(arch, "attention_bias"))
    windows = _sliding_layers(arch)
    norms2 = (h, h)
    qk = (hd, hd)
    layers: list[Layer] = []
    converts, fused = False, False
    built: dict[tuple, Layer] = {}  # layers alike (same window, MoE-ness, attention kind) are one Layer, built once
    types = _attention_types(arch)
    for i in range(n):
        w = windows[i] if i < len(windows) else None
        moe = _moe_layer(arch, i)
        kind = (w, moe, types[i])
        if kind in built:
            layers.append(built[kind])
            continue
        if mt in ("llama", "mistral", "qwen2"):
            w = arch.sliding_window if mt == "mistral" else w
            attn = _attention(arch, qkv_bias=bias or mt == "qwen2", o_bias=bias and mt != "qwen2")
            layer = Layer(attn, _gated_mlp(h, arch.intermediate_size, bool(_get(arch, "mlp_bias")) and mt == "llama"),
                          small_tensors=norms2, sliding_window=w)
        elif mt == "qwen3":
            layer = Layer(_attention(arch, bias, bias), _gated_mlp(h, arch.intermediate_size), small_tensors=norms2 + qk)
        elif mt in ("deepseek_v3", "kimi_k2"):
            converts = True
            heads, rope, nope, v = arch.num_attention_heads, _get(arch, "qk_rope_head_dim"), _get(arch, "qk_nope_head_dim"), \
                _get(arch, "v_head_dim")
            ql, kl = _get(arch, "q_lora_rank"), _get(arch, "kv_lora_rank")
            # multi-head latent attention: low-rank query, a compressed key-value latent with one shared RoPE key
            attn = (Linear("q_a_proj", h, ql, bias), Linear("q_b_proj", ql, heads * (nope + rope)),
                    Linear("kv_a_proj_with_mqa", h, kl + rope, bias), Linear("kv_b_proj", kl, heads * (nope + v)),
                    Linear("o_proj", heads * v, h, bias))
            norms = norms2 + (ql, kl)
            if moe:
                e, inter = _get(arch, "n_routed_experts"), _get(arch, "moe_intermediate_size")
                experts = Experts(e, _get(arch, "num_experts_per_tok"), h, inter,
                                  peft_names=(("gate_proj", "up_proj"), ("down_proj",)))
                layer = Layer(attn, _gated_mlp(h, inter * _get(arch, "n_shared_experts")), experts,
                              Router("gate", e, h, peft="parameter"), norms)
            else:
                layer = Layer(attn, _gated_mlp(h, arch.intermediate_size), small_tensors=norms)
        elif mt == "qwen3_5_moe_text":
            # peft 0.22 has no MoE conversion for it: target_modules reach neither the fused experts nor the router
            e, inter, k = _get(arch, "num_experts"), _get(arch, "moe_intermediate_size"), _get(arch, "num_experts_per_tok")
            experts = Experts(e, k, h, inter)
            shared = _gated_mlp(h, _get(arch, "shared_expert_intermediate_size")) + (Linear("shared_expert_gate", h, 1),)
            router = Router("gate", e, h)
            if types[i] == "linear_attention":
                nk, nv = _get(arch, "linear_num_key_heads"), _get(arch, "linear_num_value_heads")
                kd, vd = nk * _get(arch, "linear_key_head_dim"), nv * _get(arch, "linear_value_head_dim")
                attn = (Linear("in_proj_qkv", h, 2 * kd + vd), Linear("in_proj_z", h, vd), Linear("in_proj_b", h, nv),
                        Linear("in_proj_a", h, nv), Linear("out_proj", vd, h))
                # dt_bias and A_log per value head, the depthwise causal conv over q, k, v, the gated norm
                small = norms2 + (nv, nv, (2 * kd + vd) * _get(arch, "linear_conv_kernel_dim"),
                                  _get(arch, "linear_value_head_dim"))
                layer = Layer(attn, shared, experts, router, small, linear_attention=True)
            else:  # gated attention: q_proj also yields the output gate
                q, kv = arch.num_attention_heads * hd, kv_heads * hd
                attn = (Linear("q_proj", h, 2 * q, bias), Linear("k_proj", h, kv, bias), Linear("v_proj", h, kv, bias),
                        Linear("o_proj", q, h, bias))
                layer = Layer(attn, shared, experts, router, norms2 + qk)
        elif mt == "glm4_moe":
            converts = True
            attn = _attention(arch, bias, False)  # bias on q/k/v only
            norms = norms2 + (qk if _get(arch, "use_qk_norm") else ())
            if moe:
                e, inter = _get(arch, "n_routed_experts"), _get(arch, "moe_intermediate_size")
                experts = Experts(e, _get(arch, "num_experts_per_tok"), h, inter,
                                  peft_names=(("gate_proj", "up_proj"), ("down_proj",)))
                shared = _gated_mlp(h, inter * _get(arch, "n_shared_experts"))  # mlp.shared_experts
                layer = Layer(attn, shared, experts, Router("gate", e, h, peft="parameter"), norms)
            else:
                layer = Layer(attn, _gated_mlp(h, arch.intermediate_size), small_tensors=norms)
        elif mt == "olmo2":
            # post-attention and post-feedforward norms; q/k RMSNorms over the whole projections, not per head
            layer = Layer(_attention(arch, bias, bias), _gated_mlp(h, arch.intermediate_size),
                          small_tensors=norms2 + (arch.num_attention_heads * hd, kv_heads * hd))
        elif mt == "qwen3_moe":
            converts = True
            e = _get(arch, "num_experts")
            attn = _attention(arch, bias, bias)
            if moe:
                experts = Experts(e, _get(arch, "num_experts_per_tok"), h, _get(arch, "moe_intermediate_size"),
                                  peft_names=(("gate_proj", "up_proj"), ("down_proj",)))
                layer = Layer(attn, (), experts, Router("gate", e, h, peft="parameter"), norms2 + qk)
            else:
                layer = Layer(attn, _gated_mlp(h, arch.intermediate_size), small_tensors=norms2 + qk)
        elif mt == "mixtral":
            converts = True
            e = _get(arch, "num_local_experts")
            experts = Experts(e, _get(arch, "num_experts_per_tok"), h, arch.intermediate_size,
                              peft_names=(("w1", "w3"), ("w2",)))
            layer = Layer(_attention(arch, False, False), (), experts, Router("gate", e, h, peft="parameter"), norms2,
                          sliding_window=arch.sliding_window)
        elif mt in ("gemma2", "gemma3_text"):
            qk_norms = qk if mt == "gemma3_text" else ()
            layer = Layer(_attention(arch, bias, bias), _gated_mlp(h, arch.intermediate_size),
                          small_tensors=norms2 * 2 + qk_norms, sliding_window=w)
        elif mt == "phi3":
            fused = True
            layer = Layer(_attention(arch, False, False, fused_qkv=True),
                          (Linear("gate_up_proj", h, 2 * arch.intermediate_size), Linear("down_proj", arch.intermediate_size, h)),
                          small_tensors=norms2, sliding_window=arch.sliding_window)
        elif mt == "gpt_oss":
            e = _get(arch, "num_local_experts")
            experts = Experts(e, _get(arch, "num_experts_per_tok"), h, arch.intermediate_size, bias=True)
            layer = Layer(_attention(arch, bias, bias), (), experts, Router("router", e, h, bias=True),
                          small_tensors=norms2 + (arch.num_attention_heads,), sliding_window=w)  # + one sink per head
        elif mt == "llama4_text":
            e = _get(arch, "num_local_experts")
            attn = _attention(arch, bias, bias)  # its q/k norm is a weightless L2 norm
            if moe:
                experts = Experts(e, _get(arch, "num_experts_per_tok"), h, arch.intermediate_size)
                layer = Layer(attn, _gated_mlp(h, arch.intermediate_size), experts,
                              Router("router", e, h, peft="linear"), norms2)
            else:
                layer = Layer(attn, _gated_mlp(h, _get(arch, "intermediate_size_mlp")), small_tensors=norms2)
        else:
            raise unsupported(mt)
        built[kind] = layer
        layers.append(layer)
    if mt in ("deepseek_v3", "kimi_k2"):  # latent attention: the per-head query/key width (nope + rope)
        hd = _get(arch, "qk_nope_head_dim") + _get(arch, "qk_rope_head_dim")
    return Architecture(
        model_type=mt, hidden_size=h, vocab_size=arch.vocab_size, tied_embeddings=bool(_get(arch, "tie_word_embeddings")),
        num_attention_heads=arch.num_attention_heads, num_key_value_heads=kv_heads, head_dim=hd, gated_mlp=True,
        fused_projections=fused, layers=tuple(layers), final_norm=h, peft_converts_moe=converts,
    )


@functools.lru_cache(maxsize=256)
def describe(arch) -> Architecture:
    """The architecture of a ModelArch (cached: ModelArch is frozen and hashable). Unknown model_type: AdvisorError."""
    if arch in _COUNTED:
        return _COUNTED[arch]
    if arch.model_type not in SUPPORTED_MODEL_TYPES:
        raise unsupported(arch.model_type)
    return _build(arch)


# vision encoders whose modules vision_encoder_params counts (model_type of the checkpoint's vision_config)
COUNTED_VISION_ENCODERS = ("llama4_vision_model",)


def vision_encoder_params(vision: dict, text_hidden_size: int) -> int | None:
    """Parameters of a multimodal checkpoint's vision encoder plus its projector into the language model, from the
    checkpoint's `vision_config`; None for an encoder not in COUNTED_VISION_ENCODERS.

    Llama 4 (transformers' Llama4VisionModel and Llama4MultiModalProjector): a class embedding (h), positional
    embeddings for (image/patch)^2 + 1 positions, a bias-free patch projection (C p^2 x h), pre/post LayerNorms
    (weight and bias); per layer q/k/v/o with biases, fc1/fc2 with biases and two LayerNorms; the pixel-shuffle
    adapter fc1 (h / ratio^2 -> projector_input_dim) and fc2 (-> projector_output_dim), bias-free; the projector
    vision_output_dim -> text hidden (bias per multi_modal_projector_bias). For Llama-4-Scout: 871,932,416, equal
    to transformers' count on the meta device (tests/advisor/test_arch.py).
    """
    if vision.get("model_type") not in COUNTED_VISION_ENCODERS:
        return None
    h, inner, layers = vision["hidden_size"], vision["intermediate_size"], vision["num_hidden_layers"]
    positions = (vision["image_size"] // vision["patch_size"]) ** 2 + 1
    stem = h + positions * h + vision.get("num_channels", 3) * vision["patch_size"] ** 2 * h + 2 * 2 * h
    layer = 4 * (h * h + h) + (h * inner + inner) + (inner * h + h) + 2 * 2 * h
    shuffled = int(h / vision["pixel_shuffle_ratio"] ** 2)
    adapter = shuffled * vision["projector_input_dim"] + vision["projector_input_dim"] * vision["projector_output_dim"]
    projector = vision["vision_output_dim"] * text_hidden_size + (
        text_hidden_size if vision.get("multi_modal_projector_bias") else 0)
    return stem + layers * layer + adapter + projector
