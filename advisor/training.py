"""A fine-tune as the estimators see it: the fields a recipe resolves to, and their types."""

from dataclasses import dataclass
from typing import Literal

from advisor.catalog import ModelArch
from advisor.params import (
    LINEAR_MODULES, dora_magnitude_params, lora_trainable_params, param_counts, saved_module_params,
)

Method = Literal["full", "lora", "qlora"]
Optimizer = Literal["adamw", "adamw-8bit", "paged-adamw-8bit"]
Sharding = Literal["auto", "ddp", "fsdp"]
METHODS = ("lora", "qlora", "full")


@dataclass(frozen=True)
class TrainingSetup:
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
    dora: bool = False  # DoRA's magnitude vectors train beside A and B
    modules_to_save: tuple[str, ...] = ()  # whole modules trained beside the adapters (embed_tokens, lm_head)

    @property
    def trainable_params(self) -> int:
        if self.method == "full":
            return param_counts(self.arch).total
        extra = dora_magnitude_params(self.arch, self.lora_targets) if self.dora else 0
        return lora_trainable_params(self.arch, self.lora_rank, self.lora_targets) + extra + sum(
            saved_module_params(self.arch, self.modules_to_save))
