"""The adapter's model card (adapter/README.md): what was trained, on what, and what it measurably cost; and the
adapter config's target_modules as the short projection names peft matches."""

import json
from pathlib import Path

from advisor.plan.recipe import Recipe
from advisor.measure.runreport import RunReport
from runners.io import atomic_write_json, atomic_write_text


def short_target_modules(adapter_dir: Path) -> list[str]:
    """Rewrite adapter_config.json's target_modules from module paths (model.layers.0.self_attn.q_proj) to the
    projection names (q_proj): the same modules for peft (it matches names by suffix), readable, and portable."""
    path = Path(adapter_dir) / "adapter_config.json"
    config = json.loads(path.read_text())
    targets = config.get("target_modules")
    if isinstance(targets, (list, tuple)):
        short = sorted({str(t).rsplit(".", 1)[-1] for t in targets})
        if short != targets:
            config["target_modules"] = short
            atomic_write_json(path, config)
        return short
    return [targets] if targets else []


def _fmt(value: float | None, spec: str = ".4f") -> str:
    return "n/a" if value is None else format(value, spec)


def model_card(recipe: Recipe, report: RunReport, data_fingerprint: str, targets: list[str]) -> str:
    """Markdown with Hugging Face's YAML front matter (base_model, library_name) and the run's measured figures."""
    base = recipe.model.name or report.model
    mem = report.peak_memory_gib
    memory = (f"{mem.allocated:.2f} GiB allocated, {mem.reserved:.2f} GiB reserved per GPU" if mem.allocated is not None
              else f"{mem.rss:.2f} GiB resident (CPU)" if mem.rss is not None else "n/a")
    quant = f"QLoRA ({recipe.quant.quant_type}, double quant {recipe.quant.double_quant})" if recipe.quant else "LoRA"
    lines = [
        "---", f"base_model: {base}", "library_name: peft", "tags: [lora, rightsize]", "---", "",
        f"# {recipe.name}", "",
        f"A {quant} adapter for `{base}`, trained with Rightsize from the recipe `{recipe.name}` "
        "(the full resolved recipe is `../recipe.resolved.yaml`; the measured report `../report.json`).", "",
        "| | |", "|---|---|",
        f"| base model | `{base}` ({report.total_params:,} parameters) |",
        f"| adapter | r {recipe.lora.r}, alpha {recipe.lora.alpha:g}, dropout {recipe.lora.dropout:g}; "
        f"targets {', '.join(targets)}; {report.trainable_params:,} trainable parameters |",
        f"| data | `{recipe.data.path}` ({recipe.data.format}, seq_len {recipe.data.seq_len}); fingerprint `{data_fingerprint}` |",
        f"| training | {report.steps} steps, micro-batch {recipe.train.micro_batch} x grad_accum {recipe.train.grad_accum} "
        f"x {report.world_size} process(es), lr {recipe.train.lr:g} ({recipe.train.schedule}), seed {report.seed} |",
        f"| loss | first {_fmt(report.loss.first)}, last {_fmt(report.loss.last)}, eval {_fmt(report.loss.eval)} |",
        f"| compute (measured) | {report.tokens:,} tokens in {report.wall_seconds:,.1f} s "
        f"({report.tokens_per_second:,.0f} tokens/s) on {report.device}; {report.gpu_hours:.3f} GPU-hours; "
        f"MFU {_fmt(report.mfu, '.1%')}; peak memory {memory} |",
        f"| estimate | {report.estimate.peak_memory_gib:.2f} GiB peak predicted |",
        "", "Load it:", "", "```python", "from peft import PeftModel",
        "from transformers import AutoModelForCausalLM", f"base = AutoModelForCausalLM.from_pretrained({base!r})",
        'model = PeftModel.from_pretrained(base, "adapter")', "```", "",
    ]
    return "\n".join(lines)


def write_model_card(adapter_dir: Path, recipe: Recipe, report: RunReport, data_fingerprint: str) -> None:
    targets = short_target_modules(adapter_dir)
    atomic_write_text(Path(adapter_dir) / "README.md", model_card(recipe, report, data_fingerprint, targets))
