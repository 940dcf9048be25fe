"""Parameter counts of a dense decoder: its projections, embeddings and norms; LoRA's targets and trainable parameters.

Pure formulas, each checked to the parameter against transformers and peft in tests/test_estimate.py.
"""

from dataclasses import dataclass

from advisor.catalog import ModelArch
from advisor.errors import AdvisorError

ATTENTION_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_MODULES = ("gate_proj", "up_proj", "down_proj")
LINEAR_MODULES = ATTENTION_MODULES + MLP_MODULES


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



# Whole modules trained (and saved) beside the adapters, peft's modules_to_save: what each one weighs.
SAVED_MODULES = ("embed_tokens", "lm_head")


def dora_magnitude_params(arch: ModelArch, targets) -> int:
    """DoRA's extra trainable parameters: one magnitude per output feature of each adapted projection per layer.

    Source: Liu et al. 2024, DoRA §4.1 (W' = m (W0 + BA) / ||W0 + BA||_c, m of size 1 x out); peft's
    lora_magnitude_vector has out_features elements (checked against peft in the tests)."""
    shapes = layer_linear_shapes(arch)
    return arch.num_hidden_layers * sum(shapes[t].out_features for t in resolve_lora_targets(targets))


def saved_module_params(arch: ModelArch, modules) -> list[int]:
    """Element counts of the modules trained in full beside the adapters (peft modules_to_save): the input embedding
    and the LM head are vocab x hidden each (a tied LM head shares the embedding's weight)."""
    sizes = {"embed_tokens": arch.vocab_size * arch.hidden_size, "lm_head": arch.vocab_size * arch.hidden_size}
    unknown = [m for m in modules if m not in sizes]
    if unknown:
        raise AdvisorError(f"unknown module to save {unknown[0]!r}; expected one of {', '.join(SAVED_MODULES)}")
    return [sizes[m] for m in modules]
