"""Architectures the advisor has no description of, counted from transformers' own model code — only when transformers
is installed and the user asks for it (COUNT_ENV), never on a command's default path.

The model is built from its config on the meta device (no weights, no memory), and its modules are read back as the
advisor's Architecture: each decoder layer's nn.Linear modules (attention or MLP by where they sit), routed experts
(fused 3-D parameters as transformers 5 stores them, or a list of per-expert linears), the router, and every other
parameter as a small tensor. The result is accepted only if it accounts for every parameter of the built model: an
architecture whose parts cannot be read this way is refused by name rather than estimated from a guess.

What a generic count cannot know, and says (GENERIC_NOTE): the activation constants were fitted on Llama-shaped layers,
so memory for an architecture counted this way is an extrapolation; LoRA counts follow the nn.Linear modules (peft's
own rewrite of per-expert target names is not applied to experts counted here).
"""

from __future__ import annotations

import os
import re
from typing import Any

from advisor.core.errors import AdvisorError

# Set to 1 to count a model_type the advisor does not describe through transformers (installed) on the meta device.
COUNT_ENV = "RIGHTSIZE_COUNT_WITH_TRANSFORMERS"
GENERIC_NOTE = ("counted through transformers' model code (not a described architecture): parameter counts are exact, "
                "activation memory uses constants fitted on Llama-shaped layers")
# Config names of the routed experts per MoE layer, and of the experts each token is routed to, across families.
EXPERT_COUNT_KEYS = ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts")
EXPERTS_PER_TOKEN_KEYS = ("num_experts_per_tok", "top_k", "moe_top_k", "num_selected_experts", "moe_k")
# Module names of the linear that scores experts, and path parts that mark attention (vs the MLP).
ROUTER_NAMES = ("gate", "router", "w_gate", "gating")
GATED_NAMES = ("gate_proj", "up_proj", "gate_up_proj", "w1", "w3")
ATTENTION_PARTS = re.compile(r"attn|attention|mixer")
EXPERT_PART = re.compile(r"^experts?$")


def requested() -> bool:
    """The user asked for transformers' count of an architecture the advisor does not describe."""
    return os.environ.get(COUNT_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _first(config: Any, keys: tuple[str, ...]) -> int | None:
    for key in keys:
        value = getattr(config, key, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def build_meta_model(raw: dict, where: str):
    """transformers' causal LM for the config dict `raw`, built on the meta device; one-line refusals otherwise."""
    try:
        import torch
        import transformers
    except ImportError:
        raise AdvisorError(f"{where}: {COUNT_ENV} needs transformers and torch installed "
                           "(pip install 'rightsize[runner]')") from None
    model_type = raw.get("model_type")
    fields = {k: v for k, v in raw.items() if k not in ("model_type", "architectures", "auto_map")}
    try:
        config = transformers.AutoConfig.for_model(str(model_type), **fields)
    except (ValueError, KeyError) as exc:
        raise AdvisorError(f"{where}: model_type {model_type!r} is unknown to transformers {transformers.__version__} "
                           f"too ({str(exc).splitlines()[0][:120]}); it cannot be counted") from None
    try:
        with torch.device("meta"):
            model = transformers.AutoModelForCausalLM.from_config(config)
    except Exception as exc:  # noqa: BLE001 - any failure of a foreign model's constructor is a refusal by name
        raise AdvisorError(f"{where}: transformers cannot build a causal LM for model_type {model_type!r} "
                           f"({type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''})") from None
    return config, model


def count_architecture(raw: dict, where: str):
    """(Architecture, fields for ModelArch) of the config dict `raw`, read off transformers' model built on the meta
    device; refused by name when any parameter is left unaccounted for."""
    import torch.nn as nn

    from advisor.catalog.arch import Architecture, Experts, Layer, Linear, Router

    config, model = build_meta_model(raw, where)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    model_type = raw.get("model_type")
    total = sum(p.numel() for p in model.parameters())  # parameters() yields a tied weight once
    n_layers = getattr(text, "num_hidden_layers", None)
    stacks = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m) == n_layers]
    if not n_layers or not stacks:
        raise AdvisorError(f"{where}: no list of {n_layers} decoder layers found in transformers' {type(model).__name__}; "
                           "it cannot be counted")
    embed, head = model.get_input_embeddings(), model.get_output_embeddings()
    if embed is None or getattr(embed, "weight", None) is None or embed.weight.dim() != 2:
        raise AdvisorError(f"{where}: {type(model).__name__} has no token embedding matrix; it cannot be counted")
    vocab, hidden = embed.weight.shape
    tied = head is not None and head.weight is embed.weight
    if head is not None and not tied and (head.weight.numel() != vocab * hidden or getattr(head, "bias", None) is not None):
        raise AdvisorError(f"{where}: the LM head of {type(model).__name__} is not a vocab x hidden matrix; "
                           "it cannot be counted")
    n_experts, per_token = _first(text, EXPERT_COUNT_KEYS), _first(text, EXPERTS_PER_TOKEN_KEYS)
    layer_types = getattr(text, "layer_types", None) or []
    window = getattr(text, "sliding_window", None) if getattr(text, "use_sliding_window", True) else None

    def read_layer(i: int, layer) -> Layer:
        attention: list = []
        mlp: list = []
        router = None
        seen: set[int] = set()
        per_expert_linears: dict[str, list] = {}
        for path, module in layer.named_modules():
            if not isinstance(module, nn.Linear):
                continue
            parts = path.split(".")
            seen.update(id(p) for p in module.parameters(recurse=False))
            linear = Linear(parts[-1], module.in_features, module.out_features, module.bias is not None)
            expert_at = next((j for j, part in enumerate(parts[:-1]) if EXPERT_PART.match(part)), None)
            if expert_at is not None and expert_at + 1 < len(parts) and parts[expert_at + 1].isdigit():
                per_expert_linears.setdefault(parts[expert_at + 1], []).append(linear)
            elif parts[-1] in ROUTER_NAMES and n_experts and module.out_features == n_experts:
                router = Router(parts[-1], n_experts, module.in_features, module.bias is not None, peft="linear")
            elif any(ATTENTION_PARTS.search(part) for part in parts[:-1]):
                attention.append(linear)
            else:
                mlp.append(linear)
        fused: dict[str, list] = {}
        small: list[int] = []
        for path, param in layer.named_parameters():
            if id(param) in seen:
                continue
            owner = path.rsplit(".", 1)[0] if "." in path else ""
            leaf_owner = owner.split(".")[-1]
            if param.dim() == 3 or (EXPERT_PART.match(leaf_owner) and n_experts and param.dim() == 2
                                    and param.shape[0] == n_experts):
                fused.setdefault(owner, []).append(param)
            elif (leaf_owner in ROUTER_NAMES and param.dim() == 2 and n_experts and param.shape[0] == n_experts
                  and path.endswith("weight") and router is None):
                bias = any(n.startswith(owner + ".") and n.endswith("bias") for n, _ in layer.named_parameters())
                router = Router(leaf_owner, n_experts, int(param.shape[1]), bias, peft=None)
            elif leaf_owner in ROUTER_NAMES and router is not None and path.endswith("bias") and router.bias:
                continue
            else:
                small.append(param.numel())
        experts = None
        if fused or per_expert_linears:
            if not per_token:
                raise AdvisorError(f"{where}: layer {i} has routed experts but the config names no experts-per-token "
                                   f"({', '.join(EXPERTS_PER_TOKEN_KEYS)}); its active parameters cannot be counted")
            if fused and len(fused) == 1:
                params = next(iter(fused.values()))
                count = int(params[0].shape[0])
                weights = sum(p.numel() for p in params if p.dim() == 3) // count
                bias = sum(p.numel() for p in params if p.dim() == 2) // count
            elif per_expert_linears and not fused:
                count = len(per_expert_linears)
                linears = next(iter(per_expert_linears.values()))
                weights = sum(x.weights for x in linears)
                bias = sum(x.params - x.weights for x in linears)
            else:
                raise AdvisorError(f"{where}: layer {i} holds its experts in a layout the generic count does not read")
            inter, rest = divmod(weights, 3 * hidden)
            experts = Experts(count, per_token, int(hidden), int(inter), bias=bias > 0)
            if rest or experts.params_per_expert != weights + bias:
                raise AdvisorError(f"{where}: layer {i}'s experts are not gated MLPs of 3 x hidden x width weights "
                                   "(the shape the advisor prices); it cannot be counted")
        kind = layer_types[i] if i < len(layer_types) else None
        return Layer(tuple(attention), tuple(mlp), experts, router, tuple(small),
                     sliding_window=window if (kind == "sliding_attention" or (not layer_types and window)) else None,
                     linear_attention=bool(kind and "linear" in str(kind)))

    decoder = stacks[0][1]
    built: dict = {}
    layers = []
    for i, layer in enumerate(decoder):
        described = read_layer(i, layer)
        layers.append(built.setdefault(described, described))  # layers alike are one object, as arch._build keeps
    heads = getattr(text, "num_attention_heads", None) or 1
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    head_dim = getattr(text, "head_dim", None) or hidden // heads
    in_layers = sum(layer.params for layer in layers)
    embedding = vocab * hidden
    rest = total - embedding - (0 if tied else embedding) - in_layers
    if rest < 0:
        raise AdvisorError(f"{where}: transformers' {type(model).__name__} has {total:,} parameters but its parts count "
                           f"{total - rest:,}; it cannot be counted")
    architecture = Architecture(model_type=str(model_type), hidden_size=int(hidden), vocab_size=int(vocab), tied_embeddings=tied,
                                num_attention_heads=int(heads), num_key_value_heads=int(kv_heads), head_dim=int(head_dim),
                                gated_mlp=any(layer.experts or any(x.name in GATED_NAMES for x in layer.mlp)
                                              for layer in layers),
                                fused_projections=False, layers=tuple(layers), final_norm=int(rest))
    widths = [x.in_features for layer in layers for x in layer.mlp if x.out_features == hidden]
    expert_width = next((layer.experts.intermediate for layer in layers if layer.experts), None)
    fields = {"model_type": str(model_type), "hidden_size": int(hidden), "vocab_size": int(vocab),
              "num_hidden_layers": int(n_layers), "num_attention_heads": int(heads), "num_key_value_heads": int(kv_heads),
              "head_dim": int(head_dim), "tie_word_embeddings": tied,
              "intermediate_size": int(getattr(text, "intermediate_size", None) or (max(widths) if widths else 0)
                                       or expert_width or 4 * hidden)}
    if per_token and any(layer.experts for layer in layers):
        fields["num_experts_per_tok"] = per_token
    for key in ("max_position_embeddings", "rope_theta", "rms_norm_eps") + (("sliding_window",) if window else ()):
        value = getattr(text, key, None)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
            fields[key] = value
    return architecture, fields


# How peft may reach a MoE's fused experts through target names (its transformers weight conversion, peft 0.22):
# Qwen-MoE's names, Mixtral's names; (names fused into gate_up_proj, down_proj's). Each is probed on the model.
PEFT_EXPERT_LAYOUTS = ((("gate_proj", "up_proj"), ("down_proj",)), (("w1", "w3"), ("w2",)))
PEFT_CHECK_RANK = 1


def peft_layout(architecture, raw: dict, where: str):
    """The architecture with its experts and router as peft's LoRA reaches them, read off peft's own adapters on the
    meta-device model: which per-expert target names peft maps onto the fused experts (PEFT_EXPERT_LAYOUTS, or none),
    and whether all-linear adapts the router. None when peft is not installed or adapts the experts in a layout not
    listed (LoRA is then refused). A dense architecture needs no probe: peft adapts its nn.Linear modules."""
    if not any(layer.experts for layer in architecture.layers):
        return architecture
    try:
        import peft
    except ImportError:
        return None
    from msgspec.structs import replace

    def adapted(targets) -> set[str]:
        """Owners (module paths) of the LoRA parameters peft adds for `targets`; empty when none matches."""
        _, model = build_meta_model(raw, where)
        try:
            wrapped = peft.get_peft_model(model, peft.LoraConfig(r=PEFT_CHECK_RANK, lora_alpha=PEFT_CHECK_RANK,
                                                                  target_modules=targets))
        except Exception:  # noqa: BLE001 - peft's refusal (no module matches) is its own error class
            return set()
        return {name.split(".lora_")[0] for name, p in wrapped.named_parameters() if p.requires_grad}

    def reaches_experts(owners: set[str]) -> bool:
        return any(EXPERT_PART.match(part) for owner in owners for part in owner.split("."))

    layout = next((names for names in PEFT_EXPERT_LAYOUTS if reaches_experts(adapted(list(names[0] + names[1])))),
                  None)
    everything = adapted("all-linear")
    if reaches_experts(everything) and layout is None:
        return None  # peft adapts the experts under names we do not know: no count we could stand behind
    router_adapted = any(owner.split(".")[-1] in ROUTER_NAMES for owner in everything)
    layers = []
    for layer in architecture.layers:
        router = layer.router
        if router is not None and router.peft is None and router_adapted:
            router = replace(router, peft="parameter")
        experts = replace(layer.experts, peft_names=layout) if layer.experts is not None else None
        layers.append(replace(layer, experts=experts, router=router))
    return replace(architecture, layers=tuple(layers), peft_converts_moe=layout is not None)
