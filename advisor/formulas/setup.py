"""The one vocabulary of a training setup: its names and allowed values, spelled once, and `TrainingSetup`, the
fine-tune as the formulas see it.

- A recipe maps to a `TrainingSetup` in one function (advisor.plan.recipe_setup); `advisor estimate`'s flags are
  generated from these fields (advisor.cli.setup_flags): each field's `help` is the one description of it.
- Dtypes use torch's names (`float32`, `bfloat16`), as recipes do; `canonical_dtype` reads the short forms.
"""

from typing import Annotated, Literal, get_args

from msgspec import Meta, Struct

from advisor.catalog.types import ModelArch
from advisor.core.bounds import MAX_GPUS
from advisor.core.errors import AdvisorError
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


def one_of(label: str, value: str, allowed: tuple[str, ...]) -> str:
    """`value` when it is one of `allowed`, else an error naming `label` (a flag or recipe key) and the choices."""
    if value not in allowed:
        *first, last = allowed
        raise AdvisorError(f"{label} {value!r}: expected {', '.join(first) + ' or ' if first else ''}{last}")
    return value


def _about(help: str, flag: str | None = None, **bounds) -> Meta:
    """A TrainingSetup field's one description, the `advisor estimate` flag that sets it (None: from the field's
    name; "" for none) and its bounds (gt/ge/le, checked where input is read)."""
    return Meta(description=help, extra={"flag": flag}, **bounds)


class TrainingSetup(Struct, frozen=True):
    """What a fine-tune looks like to the estimators: the same fields a recipe resolves to (the defaults are this
    project's runner's)."""

    arch: Annotated[ModelArch, _about("The model's architecture (--model).", flag="")]
    method: Annotated[Method, _about("Fine-tuning method.")] = "lora"
    lora_rank: Annotated[int, _about("LoRA rank (recipe: lora.r).", flag="--rank", gt=0, le=4096)] = 16
    lora_targets: Annotated[tuple[str, ...], _about("LoRA targets: all-linear, or a comma list such as "
                                                    "q_proj,v_proj (recipe: lora.targets).", flag="--targets")] = LINEAR_MODULES
    lora_dropout: Annotated[float, _about("Dropout on the adapter input (recipe: lora.dropout).", ge=0, le=0.99)] = 0.0
    seq_len: Annotated[int, _about("Sequence length (recipe: data.seq_len).", gt=1, le=1_048_576)] = 2048
    micro_batch: Annotated[int, _about("Sequences per GPU per forward pass (recipe: train.micro_batch).", gt=0, le=4096)] = 1
    gpus: Annotated[int, _about("GPU count (recipe: launch.nproc_per_node x launch.nnodes).", gt=0, le=MAX_GPUS)] = 1
    sharding: Annotated[Sharding, _about("How the model is spread over several GPUs (recipe: launch.strategy).")] = "auto"
    internode_gbps: Annotated[float | None, _about(
        "Network per GPU between nodes, Gb/s (e.g. 400 for one NDR InfiniBand port per GPU, 100 for a 100 GbE node "
        "link shared by 8 GPUs: 12.5); what traffic beyond the GPU's NVLink domain crosses. Default: the GPU "
        "catalog's (recipe: launch.internode_gbps).", flag="--interconnect", gt=0, le=100_000)] = None
    gradient_checkpointing: Annotated[bool, _about("Recompute activations in backward (recipe: "
                                                   "train.gradient_checkpointing). Default: auto (on only where memory needs "
                                                   "it, as recommend and the runner decide).")] = True
    flash_attention: Annotated[bool, _about("A fused attention kernel (no T x T scores kept); --eager-attention: none "
                                            "(recipe: model.attn_implementation eager).", flag="--flash-attention/--eager-attention")] = True
    fused_loss: Annotated[bool, _about("The runner's fused LM head + cross-entropy where it applies (recipe: "
                                       "train.fused_loss; LoRA/QLoRA; full fine-tuning trains the head).")] = True
    optimizer: Annotated[Optimizer, _about("Optimizer (recipe: train.optimizer).")] = "adamw"
    double_quant: Annotated[bool, _about("QLoRA: quantise the quantisation constants too (recipe: quant.double_quant).")] = True
    precision: Annotated[Precision, _about("Full fine-tuning: bf16-mixed (fp32 master and moments) | bf16-pure.")] = "bf16-mixed"
    adapter_dtype: Annotated[Dtype, _about("LoRA adapters, their gradients and moments (recipe: lora.dtype; peft "
                                           "upcasts adapters of a 16-bit base to float32).")] = "float32"
    qlora_embeddings_dtype: Annotated[Dtype, _about("QLoRA's unquantised embeddings, norms, head (recipe: "
                                                    "quant.unquantized_dtype; peft's kbit preparation upcasts to float32).")] = "bfloat16"
    activation_offloading: Annotated[bool, _about("Checkpointed layer inputs kept in CPU memory (recipe: "
                                                  "train.activation_offloading; torchtune, fsdp_qlora).")] = False
    cpu_offload: Annotated[bool, _about("FSDP keeps parameters, gradients and optimizer state in CPU memory (recipe: "
                                        "launch.cpu_offload).")] = False
    optimizer_in_backward: Annotated[bool, _about("Each gradient applied and freed as soon as it is computed "
                                                  "(torchtune's optimizer_in_bwd; the runner has no such setting).")] = False
    loss: Annotated[LossKind, _about("Loss implementation: auto (the runner's: fused where it applies) | stock | "
                                     "stock-legacy (transformers < 4.46) | fused | chunked (torchtune).")] = "auto"
    mean_seq_len: Annotated[int | None, _about("Padded batches: mean padded length (seq_len is the longest); unset: "
                                               "packed sequences.", gt=0, le=1_048_576)] = None
    grad_accum: Annotated[int, _about("Micro-batches per optimizer step (recipe: train.grad_accum).", gt=0, le=4096)] = 1
    compile: Annotated[bool, _about("torch.compile (fused elementwise kernels; recipe: train.compile).")] = False
    dora: Annotated[bool, _about("DoRA's magnitude vectors train beside A and B (recipe: lora.use_dora).")] = False
    modules_to_save: Annotated[tuple[SavedModule, ...], _about("Whole modules trained beside the adapters, a comma list of "
                                                               "embed_tokens, lm_head (recipe: lora.modules_to_save).")] = ()

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
