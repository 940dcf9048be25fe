"""Parameter counts of a decoder, dense or mixture-of-experts: total, active per token, what NF4 quantises; LoRA's
targets and trainable parameters as peft applies them.

Pure formulas over advisor.catalog.arch.describe, each checked to the parameter against transformers and peft on tiny
configs of every supported model_type (tests/advisor/test_arch.py, tests/advisor/test_estimate.py).
"""

import functools

from msgspec import Struct

from advisor.catalog.arch import Architecture, Layer, describe, lora_unverified
from advisor.catalog.types import ModelArch
from advisor.core.errors import AdvisorError

ATTENTION_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_MODULES = ("gate_proj", "up_proj", "down_proj")
LINEAR_MODULES = ATTENTION_MODULES + MLP_MODULES
# Other module names peft can target in the supported families: Phi-3's fused projections, Mixtral's per-expert
# names (w1, w3 -> gate_up_proj, w2 -> down_proj) and router `gate`, Llama 4's `router`.
OTHER_TARGETS = ("qkv_proj", "gate_up_proj", "w1", "w2", "w3", "gate", "router",
                 "q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj",  # DeepSeek-V3's latent attention
                 "in_proj_qkv", "in_proj_z", "in_proj_b", "in_proj_a", "out_proj",  # Qwen3.5's linear attention
                 "shared_expert_gate")
KNOWN_TARGETS = LINEAR_MODULES + OTHER_TARGETS


class LinearShape(Struct, frozen=True):
    in_features: int
    out_features: int
    bias: bool

    @property
    def params(self) -> int:
        return self.in_features * self.out_features + (self.out_features if self.bias else 0)


def layer_linear_shapes(arch: ModelArch) -> dict[str, LinearShape]:
    """The nn.Linear projections of the first decoder layer by module name, as transformers builds them (for a dense
    Llama-family model: q/k/v/o and gate/up/down, identical in every layer)."""
    return {x.name: LinearShape(x.in_features, x.out_features, x.bias) for x in describe(arch).layers[0].linears}


class ParamCounts(Struct, frozen=True):
    total: int
    embedding: int      # token embedding table
    lm_head: int        # 0 when tied to the embedding
    layers: int         # all decoder layers (linears, experts, routers, biases, norms)
    linear_weights: int  # decoder-layer nn.Linear weights only: what bitsandbytes' NF4 quantises
    norms: int          # RMSNorm weights (layers, q/k norms, final) and attention sinks
    experts: int = 0    # routed experts' parameters, all of them (fused 3-D parameters: not quantised)
    router: int = 0     # expert routers' parameters
    active: int = 0     # used per token: total less the experts a token is not routed to
    # the whole checkpoint: total plus a multimodal wrapper's vision encoder (not loaded by a text fine-tune);
    # None when the checkpoint has a vision encoder advisor does not count
    checkpoint_total: int | None = None


@functools.lru_cache(maxsize=256)  # ModelArch is frozen and hashable; the decision asks many times
def param_counts(arch: ModelArch) -> ParamCounts:
    """Exact parameter count of a supported decoder (dense or MoE, tied or untied embeddings), to the parameter.

    Per layer: its linears (with any biases), routed experts and router, norms; plus the embedding, the final norm
    and, when untied, the LM head. Active per token: every parameter but the (E - k) experts a token skips in each
    MoE layer (the convention of the Mixtral paper's 12.9B of 46.7B, Jiang et al. 2024 §2). Checked against
    transformers' own modules in the tests.
    """
    a = describe(arch)
    embedding = a.vocab_size * a.hidden_size
    lm_head = 0 if a.tied_embeddings else embedding
    layers = sum(layer.params for layer in a.layers)
    experts = sum(layer.experts.params for layer in a.layers if layer.experts)
    router = sum(layer.router.params for layer in a.layers if layer.router)
    skipped = sum((layer.experts.count - layer.experts.per_token) * layer.experts.params_per_expert
                  for layer in a.layers if layer.experts)
    total = embedding + lm_head + layers + a.final_norm
    return ParamCounts(
        total=total, embedding=embedding, lm_head=lm_head, layers=layers,
        linear_weights=sum(x.weights for layer in a.layers for x in layer.linears),
        norms=sum(layer.small_params for layer in a.layers) + a.final_norm,
        experts=experts, router=router, active=total - skipped,
        checkpoint_total=total + arch.vision_encoder_params if arch.vision_encoder_params is not None
        else (None if arch.vision_model_type else total),
    )


def active_params(arch: ModelArch) -> int:
    """Parameters a token passes through (all of a dense model's; top-k experts of a MoE's)."""
    return param_counts(arch).active


@functools.lru_cache(maxsize=256)
def active_intermediate_size(arch: ModelArch) -> int:
    """MLP width a token goes through in its widest layer: the dense MLP's, or the shared expert's plus top-k routed
    experts' (what its activations hold per token)."""
    def width(layer: Layer) -> int:
        dense = sum(x.in_features for x in layer.mlp if x.name in ("down_proj", "w2"))
        return dense + (layer.experts.per_token * layer.experts.intermediate if layer.experts else 0)
    return max(width(layer) for layer in describe(arch).layers)


def resolve_lora_targets(targets: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """`all-linear` (peft's shorthand: every projection, not the LM head; the seven Llama names stand for it) or a
    list of module names peft can target (KNOWN_TARGETS)."""
    names = [t.strip() for t in targets.split(",")] if isinstance(targets, str) else [str(t).strip() for t in targets]
    if names == ["all-linear"]:
        return LINEAR_MODULES
    unknown = [n or "(empty)" for n in names if n not in KNOWN_TARGETS]
    if unknown or not names:
        raise AdvisorError(f"unknown LoRA target {', '.join(unknown) or '(empty)'!r}; expected all-linear or a "
                           f"comma list of {','.join(KNOWN_TARGETS)}")
    return tuple(dict.fromkeys(names))


def is_all_linear(targets: tuple[str, ...]) -> bool:
    """The resolved targets mean peft's `all-linear` (all seven Llama projection names, which is what it resolves to)."""
    return set(targets) == set(LINEAR_MODULES)


def lora_tensor_shapes(arch: ModelArch, rank: int, targets) -> list[tuple[int, int]]:
    """(rows, cols) of every LoRA A and B matrix peft 0.22 adds with bias="none", over all layers.

    nn.Linear targets: A is r x in, B is out x r (Hu et al. 2021, LoRA §4.1). `all-linear` also reaches, through peft's
    conversion for transformers 5 MoE models (Mixtral, Qwen-MoE), the router weight (A r x h, B E x r) and the fused
    experts: gate_up_proj at rank 2r (gate and up fused; A 2rE x h, B 2I x 2rE), down_proj at rank r (A rE x I,
    B h x rE). gpt-oss's experts and router, and Llama 4's experts, are not nn.Linear and all-linear leaves them frozen.
    Since peft 0.22 a name the conversion maps onto the experts still adapts the nn.Linear modules of that name (the
    dense MLP of Qwen3-MoE's mlp_only_layers; peft #3711, #3945); peft 0.21 left them frozen.
    """
    return list(_lora_tensor_shapes(arch, rank, resolve_lora_targets(targets)))


@functools.lru_cache(maxsize=1024)
def _lora_tensor_shapes(arch: ModelArch, rank: int, names: tuple[str, ...]) -> tuple[tuple[int, int], ...]:
    if lora_unverified(arch):
        raise AdvisorError(f"LoRA on {arch.name}: its experts were counted through transformers and peft's treatment "
                           "of them could not be checked (peft not installed, or no known layout matched); "
                           "estimate full fine-tuning, or a described architecture")
    return architecture_lora_shapes(describe(arch), rank, names)


def architecture_lora_shapes(a: Architecture, rank: int, names: tuple[str, ...]) -> tuple[tuple[int, int], ...]:
    """lora_tensor_shapes of a described Architecture, with the targets resolved."""
    all_linear, wanted = is_all_linear(names), set(names)
    shapes: list[tuple[int, int]] = []
    for layer in a.layers:
        for x in layer.linears:
            if all_linear or x.name in wanted:
                shapes += [(rank, x.in_features), (x.out_features, rank)]
        e, router = layer.experts, layer.router
        if router is not None and (router.peft in ("parameter", "linear")) and (
                all_linear or router.name in wanted):
            shapes += [(rank, router.hidden), (router.experts, rank)]
        elif router is not None and router.name in wanted:
            raise AdvisorError(f"LoRA target {router.name!r}: the {a.model_type} router is not a module peft can adapt")
        if e is not None and e.peft_names is not None:
            fused, down = e.peft_names
            hit = [n for n in fused if all_linear or n in wanted]
            if 0 < len(hit) < len(fused):
                raise AdvisorError(f"LoRA targets {', '.join(fused)} are fused into one gate_up_proj in {a.model_type}: "
                                   "target all of them or none")
            if hit:
                r2 = rank * len(fused)
                shapes += [(r2 * e.count, e.hidden), (2 * e.intermediate, r2 * e.count)]
            if all_linear or down[0] in wanted:
                shapes += [(rank * e.count, e.intermediate), (e.hidden, rank * e.count)]
    if not shapes:
        present = sorted({x.name for layer in a.layers for x in layer.linears})
        raise AdvisorError(f"none of the LoRA targets {','.join(names)} is in {a.model_type}; its projections: "
                           f"{','.join(present)} (or all-linear)")
    return tuple(shapes)


def lora_trainable_params(arch: ModelArch, rank: int, targets) -> int:
    """Parameters LoRA trains: r (in + out) per targeted projection per layer (A is r x in, B is out x r), experts and
    routers as peft reaches them (lora_tensor_shapes).

    Source: Hu et al. 2021, LoRA §4.1; equals peft's count with bias="none" (checked in the tests).
    """
    return _lora_trainable_params(arch, rank, resolve_lora_targets(targets))


@functools.lru_cache(maxsize=1024)  # the decision costs every method and GPU count on the same few shapes
def _lora_trainable_params(arch: ModelArch, rank: int, names: tuple[str, ...]) -> int:
    return sum(rows * cols for rows, cols in _lora_tensor_shapes(arch, rank, names))


def lora_input_features(arch: ModelArch, targets) -> int:
    """Input features summed over the adapted nn.Linear projections of one layer (what LoRA's dropout copies per
    token), from the first layer."""
    a, names = describe(arch), resolve_lora_targets(targets)
    return sum(x.in_features for x in a.layers[0].linears if is_all_linear(names) or x.name in names)


def full_tensor_numels(arch: ModelArch) -> list[int]:
    """Element counts of every parameter tensor (full fine-tuning's trainable tensors), as transformers stores them."""
    return list(_full_tensor_numels(arch))


@functools.lru_cache(maxsize=256)
def _full_tensor_numels(arch: ModelArch) -> tuple[int, ...]:
    a = describe(arch)
    out: list[int] = []
    for layer in a.layers:
        for x in layer.linears:
            out += [x.weights] + ([x.out_features] if x.bias else [])
        if layer.experts:
            e = layer.experts
            out += [e.count * e.hidden * 2 * e.intermediate, e.count * e.intermediate * e.hidden]
            out += [e.count * 2 * e.intermediate, e.count * e.hidden] if e.bias else []
        if layer.router:
            out += [layer.router.experts * layer.router.hidden] + ([layer.router.experts] if layer.router.bias else [])
        out += list(layer.small_tensors)
    out += [a.vocab_size * a.hidden_size, a.final_norm] + ([] if a.tied_embeddings else [a.vocab_size * a.hidden_size])
    return tuple(out)


@functools.lru_cache(maxsize=256)
def layer_matmul_params(arch: ModelArch) -> int:
    """Decoder-layer weights a token multiplies through: every nn.Linear, the router, and the top-k routed experts."""
    return sum(sum(x.weights for x in layer.linears)
               + (layer.router.experts * layer.router.hidden if layer.router else 0)
               + (layer.experts.per_token * layer.experts.weights_per_expert if layer.experts else 0)
               for layer in describe(arch).layers)


def matmul_params(arch: ModelArch) -> int:
    """Weights that take part in a matmul per token: the decoder layers' (a MoE's active experts only) and the LM
    head (tied or not).

    The embedding lookup is a gather, not a matmul, and norms/biases are negligible (Kaplan et al. 2020 §2.1).
    """
    return layer_matmul_params(arch) + arch.vocab_size * arch.hidden_size


# Whole modules trained (and saved) beside the adapters, peft's modules_to_save: what each one weighs.
SAVED_MODULES = ("embed_tokens", "lm_head")


def dora_magnitude_params(arch: ModelArch, targets) -> int:
    """DoRA's extra trainable parameters: one magnitude per output feature of each adapted projection per layer.

    Source: Liu et al. 2024, DoRA §4.1 (W' = m (W0 + BA) / ||W0 + BA||_c, m of size 1 x out); peft's
    lora_magnitude_vector has out_features elements (checked against peft in the tests)."""
    return sum(dora_magnitude_numels(arch, targets))


def dora_magnitude_numels(arch: ModelArch, targets) -> list[int]:
    """Element counts of DoRA's magnitude vectors: out_features of each adapted nn.Linear of every layer (fused
    experts are not nn.Linear and get none)."""
    names = set(resolve_lora_targets(targets))
    return [x.out_features for layer in describe(arch).layers for x in layer.linears if x.name in names]


def saved_module_params(arch: ModelArch, modules) -> list[int]:
    """Element counts of the modules trained in full beside the adapters (peft modules_to_save): the input embedding
    and the LM head are vocab x hidden each (a tied LM head shares the embedding's weight)."""
    sizes = {"embed_tokens": arch.vocab_size * arch.hidden_size, "lm_head": arch.vocab_size * arch.hidden_size}
    unknown = [m for m in modules if m not in sizes]
    if unknown:
        raise AdvisorError(f"unknown module to save {unknown[0]!r}; expected one of {', '.join(SAVED_MODULES)}")
    return [sizes[m] for m in modules]
