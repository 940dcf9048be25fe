"""The one vocabulary of a training setup: its names and allowed values, spelled once, and `TrainingSetup`, the
fine-tune as the formulas see it.

- A recipe maps to a `TrainingSetup` in one function (advisor.plan.recipe_setup); `advisor estimate`'s flags are
  generated from these fields (advisor.cli.setup_flags): each field's `help` is the one description of it.
- Dtypes use torch's names (`float32`, `bfloat16`), as recipes do; `canonical_dtype` reads the short forms.
"""

import dataclasses
from typing import Literal, get_args

from advisor.catalog.types import ModelArch
from advisor.core.errors import AdvisorError
from advisor.core.records import frozen
from advisor.formulas.params import (
    LINEAR_MODULES, dora_magnitude_params, lora_trainable_params, param_counts, saved_module_params,
)

Method = Literal["lora", "qlora", "full"]
Optimizer = Literal["adamw", "adamw-8bit", "paged-adamw-8bit"]
Sharding = Literal["auto", "ddp", "fsdp"]
Precision = Literal["bf16-mixed", "bf16-pure"]
Dtype = Literal["float32", "bfloat16"]
LossKind = Literal["auto", "stock", "stock-legacy", "fused", "chunked"]
SavedModule = Literal["embed_tokens", "lm_head"]  # whole modules a LoRA run may also train
METHODS: tuple[Method, ...] = get_args(Method)

# The short dtype names people also write (PyTorch Lightning's precision flags, the CLI's older values).
DTYPE_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16"}


def canonical_dtype(name: str) -> str:
    """A dtype in torch's spelling: `bf16` -> `bfloat16`, `fp32` -> `float32`; other names unchanged."""
    return DTYPE_ALIASES.get(name, name)


def one_of(label: str, value: str, allowed: tuple) -> str:
    """`value` when it is one of `allowed`, else an error naming `label` (a flag or recipe key) and the choices."""
    if value not in allowed:
        raise AdvisorError(f"{label} {value!r}: expected {', '.join(map(str, allowed[:-1]))} or {allowed[-1]}"
                           if len(allowed) > 1 else f"{label} {value!r}: expected {allowed[0]}")
    return value


def _field(default, help: str, flag: str | None = None, **bounds):
    """A TrainingSetup field: its default, its one description, and the `advisor estimate` flag that sets it (None:
    the field's name; "" for none) with its bounds (gt/ge/le)."""
    return dataclasses.field(default=default, metadata={"help": help, "flag": flag, **bounds})


@frozen
class TrainingSetup:
    """What a fine-tune looks like to the estimators: the same fields a recipe resolves to (the defaults are this
    project's runner's)."""

    arch: ModelArch = dataclasses.field(metadata={"help": "The model's architecture (--model).", "flag": ""})
    method: Method = _field("lora", "Fine-tuning method.")
    lora_rank: int = _field(16, "LoRA rank (recipe: lora.r).", flag="--rank", gt=0, le=4096)
    lora_targets: tuple[str, ...] = _field(LINEAR_MODULES, "LoRA targets: all-linear, or a comma list such as "
                                           "q_proj,v_proj (recipe: lora.targets).", flag="--targets")
    lora_dropout: float = _field(0.0, "Dropout on the adapter input (recipe: lora.dropout).", ge=0, le=0.99)
    seq_len: int = _field(2048, "Sequence length (recipe: data.seq_len).", gt=1, le=1_048_576)
    micro_batch: int = _field(1, "Sequences per GPU per forward pass (recipe: train.micro_batch).", gt=0, le=4096)
    gpus: int = _field(1, "GPU count (recipe: launch.nproc_per_node x launch.nnodes).", gt=0, le=100_000)
    sharding: Sharding = _field("auto", "How the model is spread over several GPUs (recipe: launch.strategy).")
    gradient_checkpointing: bool = _field(True, "Recompute activations in backward (recipe: "
                                          "train.gradient_checkpointing). Default: auto (on only where memory needs "
                                          "it, as recommend and the runner decide).")
    flash_attention: bool = _field(True, "A fused attention kernel (no T x T scores kept); --eager-attention: none "
                                   "(recipe: model.attn_implementation eager).", flag="--flash-attention/--eager-attention")
    fused_loss: bool = _field(True, "The runner's fused LM head + cross-entropy where it applies (recipe: "
                              "train.fused_loss; LoRA/QLoRA; full fine-tuning trains the head).")
    optimizer: Optimizer = _field("adamw", "Optimizer (recipe: train.optimizer).")
    double_quant: bool = _field(True, "QLoRA: quantise the quantisation constants too (recipe: quant.double_quant).")
    precision: Precision = _field("bf16-mixed", "Full fine-tuning: bf16-mixed (fp32 master and moments) | bf16-pure.")
    adapter_dtype: Dtype = _field("float32", "LoRA adapters, their gradients and moments (recipe: lora.dtype; peft "
                                  "upcasts adapters of a 16-bit base to float32).")
    qlora_embeddings_dtype: Dtype = _field("bfloat16", "QLoRA's unquantised embeddings, norms, head (recipe: "
                                           "quant.unquantized_dtype; peft's kbit preparation upcasts to float32).")
    activation_offloading: bool = _field(False, "Checkpointed layer inputs kept in CPU memory (recipe: "
                                         "train.activation_offloading; torchtune, fsdp_qlora).")
    cpu_offload: bool = _field(False, "FSDP keeps parameters, gradients and optimizer state in CPU memory (recipe: "
                               "launch.cpu_offload).")
    optimizer_in_backward: bool = _field(False, "Each gradient applied and freed as soon as it is computed "
                                         "(torchtune's optimizer_in_bwd; the runner has no such setting).")
    loss: LossKind = _field("auto", "Loss implementation: auto (the runner's: fused where it applies) | stock | "
                            "stock-legacy (transformers < 4.46) | fused | chunked (torchtune).")
    mean_seq_len: int | None = _field(None, "Padded batches: mean padded length (seq_len is the longest); unset: "
                                      "packed sequences.", gt=0, le=1_048_576)
    grad_accum: int = _field(1, "Micro-batches per optimizer step (recipe: train.grad_accum).", gt=0, le=4096)
    compile: bool = _field(False, "torch.compile (fused elementwise kernels; recipe: train.compile).")
    dora: bool = _field(False, "DoRA's magnitude vectors train beside A and B (recipe: lora.use_dora).")
    modules_to_save: tuple[SavedModule, ...] = _field((), "Whole modules trained beside the adapters, a comma list of "
                                              "embed_tokens, lm_head (recipe: lora.modules_to_save).")

    @property
    def tokens_per_micro_batch(self) -> float:
        """Tokens one GPU processes per micro-batch (padding included): mean length with padded batches."""
        return self.micro_batch * (self.mean_seq_len or self.seq_len)

    @property
    def trainable_params(self) -> int:
        if self.method == "full":
            return param_counts(self.arch).total
        extra = dora_magnitude_params(self.arch, self.lora_targets) if self.dora else 0
        return lora_trainable_params(self.arch, self.lora_rank, self.lora_targets) + extra + sum(
            saved_module_params(self.arch, self.modules_to_save))
