"""One run: the fit verdict from the recipe alone, then a FineTuneSession: open_folder -> setup -> train -> save ->
report."""

from pathlib import Path

import torch

from advisor.catalog.load import get_gpu, match_gpu
from advisor.core.errors import AdvisorError
from advisor.measure.runreport import RunReport
from advisor.plan.calibration import Calibration
from advisor.plan.estimate import Estimate, estimate_recipe, plan_refusal
from advisor.plan.recipe import Recipe
from runners.distributed import DistContext, init_distributed, shutdown
from runners.environment import quiet_libraries
from runners.session import FineTuneSession
from runners.tracking import check_trackers_can_start, check_trackers_installed


def run(recipe: Recipe, out_dir: Path, resume: bool = False, overwrite: bool = False, force: bool = False,
        calibration: Calibration | None = None, gpu_name: str | None = None, recipe_path: Path | None = None,
        allow_changes: bool = False) -> RunReport:
    """Fine-tune as the recipe says and return the measured report (rank 0 also writes it to out_dir).
    `recipe_path` is protected from --overwrite; `allow_changes` lets --resume continue with a changed recipe or data."""
    quiet_libraries()
    ctx = init_distributed(recipe.launch.backend)
    session = None
    try:
        gpu = get_gpu(gpu_name) if gpu_name else detect_gpu(ctx)
        device_memory = torch.cuda.get_device_properties(ctx.device).total_memory / 2**30 if ctx.device.type == "cuda" else None
        check_fit(recipe, gpu, device_memory, calibration, ctx.world_size, force)  # before the folder or any load
        check_trackers_installed(recipe)
        check_trackers_can_start(recipe)  # before the folder: a tracker that cannot start leaves nothing behind
        session = FineTuneSession(recipe, ctx, gpu, device_memory, calibration)
        session.open_folder(out_dir, resume, overwrite, recipe_path)
        session.setup(allow_changes)
        session.train()
        session.save()
        return session.report()
    finally:
        if session is not None:
            session.close()
        shutdown(ctx)


def detect_gpu(ctx: DistContext):
    """The catalog entry of the CUDA device in use, or None on CPU or an unknown GPU."""
    if ctx.device.type != "cuda":
        return None
    props = torch.cuda.get_device_properties(ctx.device)
    return match_gpu(props.name, props.total_memory / 2**30)


def check_fit(recipe: Recipe, gpu, device_memory_gib: float | None, calibration: Calibration | None, gpus: int,
              force: bool) -> Estimate:
    """The fit verdict, from the recipe alone (nothing loaded yet): refuse a run whose predicted peak exceeds the GPU's
    memory (naming what would fit) or asks for bf16 on a GPU without it, unless --force. Without a known GPU (a CPU run) there is nothing to check."""
    estimate = estimate_recipe(recipe, gpu, calibration=calibration, gpus=gpus, device_memory_gib=device_memory_gib)
    refusal = plan_refusal(estimate) if gpu is not None else None  # does not fit, or bf16 without bf16
    if refusal and not force:
        raise AdvisorError(refusal)
    return estimate
