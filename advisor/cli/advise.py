"""`advisor review` and `advisor estimate`."""

from pathlib import Path
from typing import Annotated, Optional

import typer

from advisor.catalog import load as catalog
from advisor.cli.app import app
from advisor.cli.options import (
    Count, JsonFlag, _calibration, _duration_days, _emit_json, _finite, _fraction, _gpu_spec, _number, _validated,
    _write_text,
)
from advisor.core.errors import AdvisorError
from advisor.core.convert import to_json

# The flag that sets a Proposal field, where their names differ (errors name the flag)
_PROPOSAL_FLAGS = {"cost_usd": "--cost", "price_usd_per_gpu_hour": "--price", "gpu": "--gpus"}


@app.command()
def review(
    model: Annotated[str, typer.Option(help="The proposal's model: catalog name, config.json, or a size such as 7B.")],
    tokens: Annotated[float, typer.Option(parser=Count, help="Training tokens, e.g. 2e9.")],
    method: Annotated[str, typer.Option(help="lora | qlora | full")] = "full",
    gpus: Annotated[str, typer.Option(help="GPUs, e.g. 8xA100 (or a count with --gpu).")] = "8",
    gpu: Annotated[str, typer.Option(help="GPU type when --gpus is a count.")] = "A100-80GB",
    days: Annotated[Optional[float], typer.Option(parser=_duration_days, help="The proposal's wall-clock: 14, 14d, 2w.")] = None,
    cost: Annotated[Optional[float], typer.Option(parser=Count, help="The proposal's dollars, e.g. 150k.")] = None,
    epochs: Annotated[float, typer.Option(parser=_number(upper=1000), help="Passes over the tokens.")] = 1.0,
    seq_len: Annotated[int, typer.Option(parser=_number(integer=True, upper=1_048_576), help="Training sequence length.")] = 2048,
    price: Annotated[Optional[float], typer.Option(parser=Count, help="Override the GPU's $/GPU-hour.")] = None,
    calibration: Annotated[Optional[Path], typer.Option(help="Calibration file (default: the user's, if any).")] = None,
    as_json: JsonFlag = False,
    report: Annotated[Optional[Path], typer.Option(help="Also write the review as Markdown to this file.")] = None,
):
    """Check a proposed plan (model, method, GPUs, days, dollars) against the formulas, and the cheaper path."""
    from advisor.render.review import render_review, review_markdown
    from advisor.decide.review import Proposal, review_proposal

    if method not in ("lora", "qlora", "full"):
        raise AdvisorError(f"--method {method!r}: expected lora, qlora or full")
    count, kind = _gpu_spec(gpus, gpu)
    proposal = _validated(Proposal, _PROPOSAL_FLAGS, model=model, method=method, gpu=kind, gpus=count, days=days, cost_usd=cost,
                          tokens=tokens, epochs=epochs, seq_len=seq_len, price_usd_per_gpu_hour=price)
    result = review_proposal(proposal, _calibration(calibration))
    if report:
        _write_text(report, "\n".join(["# Proposal review", ""] + review_markdown(result)))
    if as_json:
        _emit_json(_finite(to_json(result)))
    else:
        typer.echo(render_review(result))
        if report:
            typer.echo(f"Wrote {report}")


# An estimate is sized against one GPU type; without one there is no fit verdict and no GPU-hours or dollars.
NEED_GPU = "give --gpu to size and cost it (e.g. --gpu A100-80GB; the list: advisor catalog gpus)"


@app.command()
def estimate(
    recipe: Annotated[Optional[Path], typer.Argument(help="A recipe YAML to estimate (instead of --model ...).")] = None,
    model: Annotated[Optional[str], typer.Option(help="Catalog model, hub id (org/name: local HF cache, else the hub) or config.json path.")] = None,
    method: Annotated[str, typer.Option(help="lora | qlora | full")] = "lora",
    rank: Annotated[int, typer.Option(parser=_number(integer=True, upper=4096), help="LoRA rank.")] = 16,
    targets: Annotated[str, typer.Option(help="all-linear, or a comma list such as q_proj,v_proj.")] = "all-linear",
    seq_len: Annotated[int, typer.Option(parser=_number(integer=True, upper=1_048_576), help="Sequence length.")] = 2048,
    micro_batch: Annotated[int, typer.Option(parser=_number(integer=True, upper=4096), help="Sequences per GPU per step.")] = 1,
    gpu: Annotated[Optional[str], typer.Option(help="GPU type (advisor catalog gpus).")] = None,
    gpus: Annotated[Optional[int], typer.Option(parser=_number(integer=True, upper=100000), help="GPU count (FSDP beyond one if needed).")] = None,
    tokens: Annotated[Optional[float], typer.Option(parser=Count, help="Tokens to train on, for GPU-hours and dollars.")] = None,
    gradient_checkpointing: Annotated[Optional[bool], typer.Option("--gradient-checkpointing/--no-gradient-checkpointing", help="Default: auto (on only where memory needs it, as recommend and the runner decide).")] = None,
    eager_attention: Annotated[bool, typer.Option("--eager-attention", help="No fused attention kernel (keeps the T x T scores).")] = False,
    optimizer: Annotated[str, typer.Option(help="adamw | adamw-8bit | paged-adamw-8bit")] = "adamw",
    precision: Annotated[str, typer.Option(help="Full fine-tuning: bf16-mixed (fp32 master and moments) | bf16-pure.")] = "bf16-mixed",
    adapter_dtype: Annotated[str, typer.Option(help="LoRA adapters, their gradients and moments: fp32 | bf16.")] = "fp32",
    qlora_embeddings_dtype: Annotated[str, typer.Option(help="QLoRA's unquantised embeddings, norms, head: bf16 | fp32 (peft's upcast).")] = "bf16",
    activation_offloading: Annotated[bool, typer.Option("--activation-offloading", help="Kept activations in CPU memory.")] = False,
    cpu_offload: Annotated[bool, typer.Option("--cpu-offload", help="FSDP keeps weights, gradients and optimizer state in CPU memory.")] = False,
    mean_seq_len: Annotated[Optional[int], typer.Option(parser=_number(integer=True, upper=1_048_576), help="Padded batches: mean padded length (--seq-len is the longest).")] = None,
    grad_accum: Annotated[int, typer.Option(parser=_number(integer=True, upper=4096), help="Micro-batches per optimizer step.")] = 1,
    compile_: Annotated[bool, typer.Option("--compile", help="torch.compile (fused elementwise kernels).")] = False,
    loss: Annotated[str, typer.Option(help="auto (the runner's) | stock | stock-legacy (transformers < 4.46) | fused | chunked (torchtune).")] = "auto",
    efficiency: Annotated[Optional[float], typer.Option(parser=_fraction, help="Achieved fraction of peak (default: calibrated or the step-time model's).")] = None,
    price: Annotated[Optional[float], typer.Option(parser=Count, help="Override $/GPU-hour.")] = None,
    calibration: Annotated[Optional[Path], typer.Option(help="Calibration file (default: the user's, if any).")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Recipe override key.path=value (with RECIPE).")] = None,
    as_json: JsonFlag = False,
):
    """Memory per GPU, FLOPs, GPU count, GPU-hours and dollars of a fine-tune (flags or a recipe)."""
    from advisor.formulas.params import resolve_lora_targets
    from advisor.formulas.setup import TrainingSetup
    from advisor.plan.estimate import estimate_recipe, estimate_training
    from advisor.plan.recipe import check_inputs, load_recipe
    from advisor.render.estimate import render_estimate

    cal = _calibration(calibration)
    if recipe is not None:
        if model is not None:
            raise AdvisorError("give either RECIPE or --model, not both")
        loaded = load_recipe(recipe, set_ or [])
        check_inputs(loaded, recipe, data=tokens is None)  # with --tokens the data need not exist yet
        if gpu is None and loaded.launch.gpu is None:
            raise AdvisorError(f"{recipe} names no launch.gpu: {NEED_GPU}")
        result = estimate_recipe(loaded, gpu, calibration=cal, gpus=gpus, tokens=tokens, efficiency=efficiency, price=price)
    else:
        if model is None:
            raise AdvisorError("give a RECIPE or --model (e.g. --model Llama-3.1-8B)")
        if method not in ("lora", "qlora", "full"):
            raise AdvisorError(f"--method {method!r}: expected lora, qlora or full")
        if optimizer not in ("adamw", "adamw-8bit", "paged-adamw-8bit"):
            raise AdvisorError(f"--optimizer {optimizer!r}: expected adamw, adamw-8bit or paged-adamw-8bit")
        for flag, value, allowed in (("--precision", precision, ("bf16-mixed", "bf16-pure")),
                                     ("--adapter-dtype", adapter_dtype, ("fp32", "bf16")),
                                     ("--qlora-embeddings-dtype", qlora_embeddings_dtype, ("bf16", "fp32")),
                                     ("--loss", loss, ("auto", "stock", "stock-legacy", "fused", "chunked"))):
            if value not in allowed:
                raise AdvisorError(f"{flag} {value!r}: expected {' or '.join(allowed)}")
        if mean_seq_len is not None and mean_seq_len > seq_len:
            raise AdvisorError(f"--mean-seq-len {mean_seq_len} exceeds --seq-len {seq_len} (the longest batch)")
        setup = TrainingSetup(arch=catalog.get_model(model), method=method, lora_rank=rank,
                              lora_targets=resolve_lora_targets(targets), seq_len=seq_len, micro_batch=micro_batch,
                              gpus=gpus or 1, gradient_checkpointing=bool(gradient_checkpointing),
                              flash_attention=not eager_attention, optimizer=optimizer, precision=precision,
                              adapter_dtype=adapter_dtype, qlora_embeddings_dtype=qlora_embeddings_dtype,
                              activation_offloading=activation_offloading, cpu_offload=cpu_offload,
                              mean_seq_len=mean_seq_len, grad_accum=grad_accum, compile=compile_, loss=loss)
        if gpu is None:
            raise AdvisorError(f"no GPU type: {NEED_GPU}")
        gpu_type = catalog.get_gpu(gpu)
        reason = "set (--gradient-checkpointing)" if gradient_checkpointing is not None else None
        if gradient_checkpointing is None:  # auto: the rule recommend and the runner use
            from msgspec.structs import replace
            from advisor.plan.sizing import choose_checkpointing
            overheads = cal.overheads(gpu_type.name, method) if (cal and gpu_type) else {}
            checkpointing, reason = choose_checkpointing(setup, gpu_type.usable_memory_gib, overheads)
            setup = replace(setup, gradient_checkpointing=checkpointing)
        result = estimate_training(setup, gpu_type, tokens, "given (--tokens)" if tokens is not None else None,
                                   efficiency, price, cal, checkpointing_reason=reason)
    from advisor.render.notices import price_notices
    notices = price_notices([catalog.get_gpu(result.gpu)]) if (result.cost_usd and price is None and result.gpu) else []
    if as_json:
        _emit_json(_finite(to_json(result) | {"notices": notices}))
    else:
        typer.echo(render_estimate(result))
        for line in notices:
            typer.echo(line)
