"""A fine-tune as the estimators see it: the fields a recipe resolves to, and their types."""

from typing import Literal

from msgspec import Struct

from advisor.catalog.types import ModelArch
from advisor.formulas.params import (
    LINEAR_MODULES, dora_magnitude_params, lora_trainable_params, param_counts, saved_module_params,
)

Method = Literal["full", "lora", "qlora"]
Optimizer = Literal["adamw", "adamw-8bit", "paged-adamw-8bit"]
Sharding = Literal["auto", "ddp", "fsdp"]
Precision = Literal["bf16-mixed", "bf16-pure"]
Dtype = Literal["fp32", "bf16"]
LossKind = Literal["auto", "stock", "stock-legacy", "fused", "chunked"]
METHODS = ("lora", "qlora", "full")


class TrainingSetup(Struct, frozen=True):
    """What a fine-tune looks like to the estimators: the same fields a recipe resolves to."""

    arch: ModelArch
    method: Method = "lora"
    lora_rank: int = 16
    lora_targets: tuple[str, ...] = LINEAR_MODULES
    lora_dropout: float = 0.0
    seq_len: int = 2048
    micro_batch: int = 1
    gpus: int = 1
    sharding: Sharding = "auto"
    gradient_checkpointing: bool = True
    flash_attention: bool = True
    fused_loss: bool = True  # the runner's fused LM head + cross-entropy (LoRA/QLoRA; full fine-tuning trains the head)
    optimizer: Optimizer = "adamw"
    double_quant: bool = True
    # How the stack keeps its numbers and where it puts them (the defaults are this project's runner):
    precision: Precision = "bf16-mixed"   # full fine-tuning: bf16-mixed keeps fp32 master weights; bf16-pure does not
    adapter_dtype: Dtype = "fp32"         # LoRA A/B (peft upcasts adapters of a 16-bit base to fp32)
    qlora_embeddings_dtype: Dtype = "bf16"  # QLoRA's unquantised embeddings, head, norms (peft's kbit prep: fp32)
    activation_offloading: bool = False   # checkpointed layer inputs kept in CPU memory (torchtune, fsdp_qlora)
    cpu_offload: bool = False             # FSDP keeps parameters, gradients and optimizer state in CPU memory
    optimizer_in_backward: bool = False   # each gradient applied and freed as soon as it is computed (torchtune)
    loss: LossKind = "auto"               # auto: the runner's choice (fused where fused_loss_applies)
    mean_seq_len: int | None = None       # padded batches: mean padded length (seq_len is the longest); None: packed
    grad_accum: int = 1
    compile: bool = False
    dora: bool = False  # DoRA's magnitude vectors train beside A and B
    modules_to_save: tuple[str, ...] = ()  # whole modules trained beside the adapters (embed_tokens, lm_head)

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
