"""A recipe as the estimators see it: the one mapping from recipe keys to `TrainingSetup` fields, and the recipe keys
that do not reach the estimate, each with the reason.

tests/advisor/test_setup_vocabulary.py walks every recipe key: each is in IN_ESTIMATE (and changing it changes the
estimate) or in NOT_IN_ESTIMATE.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from advisor.formulas.setup import TrainingSetup

if TYPE_CHECKING:  # annotations only
    from advisor.plan.recipe import Recipe

# Recipe key -> what it sets in the estimate (a TrainingSetup field, or the token count, GPU type or GPU count).
IN_ESTIMATE = {
    "name": "the estimate's recipe name",
    "model.name": "arch", "model.arch": "arch", "model.attn_implementation": "flash_attention (eager: none)",
    "lora.r": "lora_rank", "lora.dropout": "lora_dropout", "lora.targets": "lora_targets", "lora.use_dora": "dora",
    "lora.modules_to_save": "modules_to_save", "lora.dtype": "adapter_dtype",
    "quant": "method (present: qlora)", "quant.double_quant": "double_quant",
    "quant.unquantized_dtype": "qlora_embeddings_dtype",
    "data.path": "tokens (the file's size)", "data.weight": "tokens (with data.mix)",
    "data.mix": "tokens (each source's size x its weight)", "data.val_fraction": "tokens (held out)",
    "data.seq_len": "seq_len",
    "train.epochs": "tokens", "train.max_steps": "tokens", "train.micro_batch": "micro_batch",
    "train.grad_accum": "grad_accum", "train.gradient_checkpointing": "gradient_checkpointing",
    "train.fused_loss": "fused_loss", "train.activation_offloading": "activation_offloading",
    "train.compile": "compile", "train.optimizer": "optimizer",
    "launch.nproc_per_node": "gpus", "launch.nnodes": "gpus", "launch.strategy": "sharding",
    "launch.cpu_offload": "cpu_offload", "launch.gpu": "the GPU type sized against",
    "launch.internode_gbps": "internode_gbps",
}

_LEARNING = "changes what is learned, not the work of a step"
_ROWS = "how rows become tokens and loss masks; the masked tokens are computed all the same"
_NOT_TIMED = "its time is not modelled (the estimate covers the training steps)"
_PLAN_RECORD = "recorded from the recommendation, not read by the estimate (advisor launch reads the GPU-hours)"
# Recipe key -> why it does not change the estimate (or what the estimate leaves out).
NOT_IN_ESTIMATE = {
    "model": "a section (its keys are listed)", "lora": "a section (its keys are listed)",
    "data": "a section (its keys are listed)", "train": "a section (its keys are listed)",
    "eval": "a section (its keys are listed)", "launch": "a section (its keys are listed)",
    "model.random_init": "random weights cost what trained ones do",
    "model.tokenizer": "the token count comes from the file size (4 characters a token) or --tokens",
    "model.dtype": "auto, bfloat16 and float16 are 16-bit, as the estimate assumes; float32 is not modelled "
                   "(the estimate says so)",
    "model.trust_remote_code": "whether shipped code may run",
    "lora.alpha": "the update's scale only", "lora.use_rslora": "the update's scale only",
    "lora.init": "a one-off initialisation before the first step; " + _NOT_TIMED,
    "quant.quant_type": "nf4 and fp4 both store 4 bits a weight with the same constants",
    "quant.compute_dtype": "bfloat16 and float16 have the same width and peak; float32 is not modelled (the "
                           "estimate says so)",
    "data.hub": "where rows come from; a hub dataset is costed with --tokens",
    "data.split": "where rows come from", "data.eval_path": "eval passes: " + _NOT_TIMED,
    "data.format": _ROWS, "data.conversations_field": _ROWS, "data.prompt_field": _ROWS,
    "data.completion_field": _ROWS, "data.text_field": _ROWS, "data.instruction_field": _ROWS,
    "data.input_field": _ROWS, "data.output_field": _ROWS, "data.messages_field": _ROWS,
    "data.train_on_prompt": _ROWS, "data.on_bad_rows": "what happens to rows that fail validation",
    "data.packing": "false pads each batch to its longest row: not modelled from the recipe (the estimate says "
                    "so; --mean-seq-len gives the mean padded length)",
    "data.max_examples": "the file-size token count reads no rows; the run replaces it with the tokenized count "
                         "(--tokens costs the subset)",
    "data.mix.path": "see data.mix", "data.mix.hub": "see data.mix", "data.mix.split": "see data.mix",
    "data.mix.weight": "see data.mix",
    "train.lr": _LEARNING, "train.weight_decay": _LEARNING, "train.schedule": _LEARNING,
    "train.warmup_steps": _LEARNING, "train.min_lr": _LEARNING, "train.max_grad_norm": _LEARNING,
    "train.host_memory": "the CPU's resident memory, which the estimate (GPU memory) does not model",
    "train.seed": _LEARNING, "train.checkpoint_every": "saving checkpoints: " + _NOT_TIMED,
    "train.eval_every": "eval passes: " + _NOT_TIMED, "train.log_every": "what is written, not computed",
    "train.merge": "the merge after training: " + _NOT_TIMED, "train.report_to": "where metrics go",
    "eval.samples": "generation at eval: " + _NOT_TIMED, "eval.max_new_tokens": "generation at eval: " + _NOT_TIMED,
    "eval.early_stopping_patience": "early stopping can only shorten the run; the estimate is for all of it",
    "eval.early_stopping_delta": "early stopping can only shorten the run; the estimate is for all of it",
    "launch.backend": "the step-time model assumes NCCL on GPUs (gloo is for CPU runs)",
    "plan": "a record of the estimate the recipe was chosen on (its keys are listed)",
    **{f"plan.{key}": _PLAN_RECORD for key in ("chosen_by", "advisor_version", "gpu", "gpus", "nodes", "gpu_hours",
                                              "gpu_hours_low", "gpu_hours_high", "memory_gib_per_gpu", "cost_usd")},
    "plan.tokens": "`advisor estimate RECIPE` costs them when neither --tokens nor train.max_steps is given (the "
                   "estimate then matches the recommendation); the run counts its own data",
}


def recipe_setup(recipe: Recipe, gpus: int | None = None) -> TrainingSetup:
    """The estimators' view of a recipe, the one place recipe keys become setup fields (IN_ESTIMATE).
    gradient_checkpointing: auto reads as off here; advisor.plan.launch_plan decides it."""
    lora, train, quant = recipe.lora, recipe.train, recipe.quant
    return TrainingSetup(
        arch=recipe.model.resolve_arch(), method=recipe.method, lora_rank=lora.r, lora_targets=lora.target_modules,
        lora_dropout=lora.dropout, seq_len=recipe.data.seq_len, micro_batch=train.micro_batch,
        gpus=gpus or recipe.world_size, sharding=recipe.launch.strategy,
        gradient_checkpointing=train.gradient_checkpointing is True, fused_loss=train.fused_loss,
        flash_attention=recipe.model.attn_implementation != "eager", optimizer=train.optimizer,
        double_quant=quant.double_quant if quant else True, dora=lora.use_dora, modules_to_save=lora.modules_to_save,
        adapter_dtype=lora.dtype, activation_offloading=train.activation_offloading,
        qlora_embeddings_dtype="float32" if quant and quant.unquantized_dtype == "float32" else "bfloat16",
        cpu_offload=recipe.launch.cpu_offload, grad_accum=train.grad_accum, compile=train.compile,
        internode_gbps=recipe.launch.internode_gbps,
    )


def not_modelled(recipe: Recipe) -> list[str]:
    """The recipe's settings that change its cost in ways the estimate does not model, one line each."""
    notes = []
    if recipe.model.dtype == "float32":
        notes.append("model.dtype float32: a 32-bit base doubles the base weights and slows the matmuls; the "
                     "estimate assumes 16 bits")
    if recipe.quant and recipe.quant.compute_dtype == "float32":
        notes.append("quant.compute_dtype float32: 32-bit compute is not modelled; the estimate assumes 16 bits")
    if not recipe.data.packing:
        notes.append("data.packing false: batches are padded to their longest row, which the estimate does not "
                     "know (--mean-seq-len sets the mean padded length)")
    return notes
