"""`advisor estimate`: memory per GPU by component, the fit verdict, FLOPs, GPU-hours and dollars."""

from advisor.plan.estimate import Estimate
from advisor.core.numbers import human
from advisor.render import gib, hours, money, table


def render_estimate(e: Estimate) -> str:
    m = e.memory_gib
    where = f"{e.gpus} x {e.gpu}" + (f" ({e.gpu_source}; --gpu to choose)" if e.gpu_source and e.gpu_source != "given" else "") \
        if e.gpu else "CPU"
    out = [
        f"Estimate: {e.method} of {e.model} on {where}" + (f" (recipe {e.recipe})" if e.recipe else ""),
        *(f"  override: {line}" for line in e.overrides),
        f"  parameters: {human(e.total_params)} total"
        + (f", {human(e.active_params)} active per token" if e.active_params and e.active_params != e.total_params else "")
        + f", {e.trainable_params:,} trainable",
        *_checkpoint_line(e),
        *([f"  architecture: {e.architecture}"] if e.architecture else []),
        f"  FLOPs per token: {e.flops_per_token:.3g} (forward {e.flops_breakdown['forward']:.3g}, backward "
        f"{e.flops_breakdown['backward']:.3g}, recompute {e.flops_breakdown['recompute']:.3g})"
        + (f"; of it dense {e.flops_per_token - e.flops_breakdown['experts']:.3g}, routed experts "
           f"{e.flops_breakdown['experts']:.3g}" if e.flops_breakdown.get("experts") else ""),
        "",
        "Memory per GPU (GiB):",
        table(["weights", "adapters", "gradients", "optimizer", "activations", "logits", "overhead", "total"],
              [[gib(m[k]) for k in ("weights", "adapters", "gradients", "optimizer", "activations", "logits", "overhead", "total")]]),
        f"  sharding: {m['sharding']}",
        f"  gradient checkpointing: {'on' if e.gradient_checkpointing else 'off'}"
        + (f" ({e.gradient_checkpointing_reason})" if e.gradient_checkpointing_reason else ""),
    ]
    out += _communication_lines(e)
    if e.peak_memory_low_gib is not None and e.peak_memory_high_gib is not None:
        out.append(f"  peak (reserved, what torch.cuda.max_memory_reserved reports): {e.peak_memory_gib:.1f} GiB, "
                   f"{e.interval_level:.0%} interval {e.peak_memory_low_gib:.1f}-{e.peak_memory_high_gib:.1f}; "
                   f"allocated {e.peak_memory_allocated_gib:.1f}"
                   + (f"; nvidia-smi would show {e.peak_memory_nvidia_smi_gib:.1f}" if e.peak_memory_nvidia_smi_gib else ""))
    if e.gpu:
        verdict = {"fits": "fits", "tight": "TIGHT", "does not fit": "does NOT fit"}.get(e.fit_verdict or "",
                                                                                          "fits" if e.fits else "does NOT fit")
        detail = ""
        if e.fit_verdict == "tight" and e.headroom_gib is not None:
            detail = (f" (the estimate leaves {e.headroom_gib:.1f} GiB of the {e.gpu_memory_gib:.1f}, but its upper bound "
                      f"{e.peak_memory_high_gib:.1f} GiB does not fit)")
        out.append(f"  {verdict} in {e.gpu_memory_gib:.1f} GiB{detail}; fewest {e.gpu} that fit: {e.gpus_needed or 'none'}")
    if e.method == "qlora" and e.active_params and e.active_params != e.total_params:
        out.append("  note: MoE experts are fused 3-D parameters that bitsandbytes does not quantise; they count at fp32 "
                   "after prepare_model_for_kbit_training (advisor.formulas.memory.weight_bytes)")
    for s in e.suggestions:
        out.append(f"  would fit: {s}")
    if e.precision_conflict:
        out.append(f"  warning: {e.precision_conflict}")
    out += [f"  not modelled: {line}" for line in e.not_modelled]
    if e.tokens is not None:
        out += ["", f"Tokens: {human(e.tokens)} ({e.tokens_source or 'given'})",
                f"  FLOPs: {e.total_flops:.3g} executed, {e.model_flops:.3g} model"]
        if e.gpu is None:
            out.append("  GPU-hours and cost: none on a CPU; give --gpu to cost the run on a GPU")
        else:
            out += [f"  GPU-hours: {gpu_time(e.gpu_hours)}" + _range(e.gpu_hours_low, e.gpu_hours_high, e, gpu_time)
                    + f" at efficiency {e.efficiency:.2f} ({e.efficiency_source})",
                    f"  tokens/s per GPU: {e.tokens_per_second_per_gpu:,.0f}"
                    + _range(e.tokens_per_second_per_gpu_low, e.tokens_per_second_per_gpu_high, e, lambda x: f"{x:,.0f}"),
                    f"  cost: {money(e.cost_usd)}" + _range(e.cost_usd_low, e.cost_usd_high, e, money)]
    if e.interval_basis:
        out.append("  intervals from the errors of published rows (leave-one-out; candidates out of sample): "
                   + "; ".join(f"{q} {b}" for q, b in e.interval_basis.items()) + " (docs/accuracy.md)")
    out += [f"  {line}" for line in e.extrapolating or []]
    out += _data_lines(e)
    return "\n".join(out)


def _range(low, high, e: Estimate, fmt) -> str:
    """ (80% interval low-high), or nothing where there is no interval."""
    if low is None or high is None:
        return ""
    return f" ({e.interval_level:.0%} interval {fmt(low)}-{fmt(high)})"


def _communication_lines(e: Estimate) -> list[str]:
    """Where the collectives run and how long they take per step: over the NVLink domain, or across nodes."""
    s = e.step_seconds
    if not s or e.gpus < 2 or not s.get("communication_total_s"):
        return []
    where = "within one NVLink domain" if s["nodes"] <= 1 else (
        f"across {s['nodes']} nodes over a {s['network_gbps']:g} Gb/s network per GPU ("
        + ("assumed: the catalog states none for this GPU; give --interconnect" if s["network_assumed"]
           else "--interconnect to change") + ")")
    return [f"  communication: {s['communication_total_s']:.2f} s per step {where}; "
            f"{s['communication_s']:.2f} s of it not hidden behind compute (step {s['total_s']:.2f} s)"]


def gpu_time(h: float | None) -> str:
    """GPU-hours as a person reads them: under an hour also in GPU-minutes, under a minute in GPU-seconds (a small
    run printed as 0.0 hours would say nothing)."""
    if h is None or h >= 1:
        return hours(h)
    if h * 60 >= 1:
        return f"{h:.2g} ({h * 60:.2g} GPU-minutes)"
    return f"{h:.2g} ({h * 3600:.2g} GPU-seconds)"


def _checkpoint_line(e: Estimate) -> list[str]:
    """What the checkpoint holds beyond the text model this estimate trains (a multimodal wrapper's vision encoder)."""
    if not e.vision_model_type:
        return []
    if e.checkpoint_params is None:
        return [f"  checkpoint: also a {e.vision_model_type} vision encoder, not counted (a text fine-tune does not "
                "load it)"]
    return [f"  checkpoint: {human(e.checkpoint_params)} with its {e.vision_model_type} vision encoder and projector "
            f"({human(e.checkpoint_params - e.total_params)}), which a text fine-tune does not load"]


def _data_lines(e: Estimate) -> list[str]:
    """The recipe's data prepared once before training: the time to tokenize and pack it, the packed cache's size."""
    if e.data_preparation_source is None:
        return []
    if e.data_preparation_seconds is None or e.data_tokens is None or e.data_cache_bytes is None:
        return ["", f"Data preparation: {e.data_preparation_source}"]
    return ["", f"Data preparation: ~{duration(e.data_preparation_seconds)} ({e.data_preparation_source}); packed cache {disk_bytes(e.data_cache_bytes)} on disk "
                "(12 bytes per token, runners.data.PackedRows)",
            f"  data tokens: {human(e.data_tokens)} ({e.data_tokens_source})"]


def duration(seconds: float) -> str:
    """Seconds as a person reads them: 40 s, 4 min, 2.5 h."""
    if seconds < 90:
        return f"{seconds:.2g} s" if seconds < 10 else f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.2g} h"


def disk_bytes(n: float) -> str:
    """Bytes in decimal units, as file managers and `ls -h --si` show them: 48 KB, 1.2 GB."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            return f"{n / scale:.2g} {unit}" if n / scale < 100 else f"{n / scale:.0f} {unit}"
    return f"{n:.0f} bytes"
