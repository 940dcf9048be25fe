"""`advisor run`: in this process for one GPU or CPU, or through torchrun for several processes and nodes."""

import os
import subprocess
import sys
from pathlib import Path

from advisor.plan.calibration import Calibration
from advisor.core.errors import AdvisorError
from advisor.plan.recipe import Recipe
from advisor.measure.runreport import RunReport, load_report


RUNS_ROOT = Path("runs")


def default_out_dir(recipe: Recipe) -> Path:
    """runs/<recipe name>; the name is validated as a name (advisor.plan.recipe), and the path must stay under runs/."""
    out = RUNS_ROOT / recipe.name
    if out.resolve().parent != RUNS_ROOT.resolve():
        raise AdvisorError(f"name {recipe.name!r}: the run folder {out} would not be inside {RUNS_ROOT}/; "
                           "give a plain name or pass --out")
    return out


def launch(recipe: Recipe, recipe_path: Path, out_dir: Path | None = None, resume: bool = False, overwrite: bool = False,
           force: bool = False, calibration: Calibration | None = None, overrides: list[str] | None = None,
           node_rank: int | None = None, rdzv_endpoint: str | None = None, gpu: str | None = None,
           allow_changes: bool = False, resume_auto: bool = False) -> RunReport | None:
    """Run the recipe; returns the report (None on nodes other than the first, which write none). `resume_auto`:
    start, continue or (for a finished run) only report, whichever the folder calls for (`resolve_auto_resume`)."""
    out_dir = Path(out_dir) if out_dir else default_out_dir(recipe)
    if resume_auto:
        if resume or overwrite:
            raise AdvisorError("--resume-auto decides by itself: drop --resume and --overwrite")
        mode = resolve_auto_resume(recipe, out_dir)
        if mode == "complete":
            return load_report(out_dir)
        resume, overwrite = mode == "resume", mode == "restart"
    if recipe.world_size == 1 or "LOCAL_RANK" in os.environ:
        from runners.run import run
        return run(recipe, out_dir, resume=resume, overwrite=overwrite, force=force, calibration=calibration, gpu_name=gpu,
                   recipe_path=recipe_path, allow_changes=allow_changes)
    check_process_count(recipe, visible_gpus())
    _check_fit_before_launch(recipe, gpu, calibration, force)
    if (node_rank or 0) == 0:  # refuse what the workers would refuse, before starting them (the lock is theirs)
        from runners.rundir import RunFolder
        RunFolder.open(out_dir, resume, overwrite, {"data": Path(recipe.data.path), "recipe": recipe_path,
                                                    "current directory": Path.cwd()}).close()
    prepare_data(recipe)  # once, with every core, before the ranks start and open it (runners.prepare)
    command = torchrun_command(recipe, recipe_path, out_dir, resume, overwrite, force, calibration, overrides or [],
                               node_rank, rdzv_endpoint, gpu, allow_changes)
    code = _run_forwarding_signals(command)
    if code != 0:
        raise AdvisorError(f"torchrun exited with code {code}; the first error is printed above")
    if (node_rank or 0) != 0:
        return None
    return load_report(out_dir)


def prepare_data(recipe: Recipe, processes: int | None = None):
    """The recipe's data prepared into the cache (or found there): `advisor prepare`, and `advisor run` before
    torchrun starts several processes."""
    from runners.environment import cache_root
    from runners.prepare import build_dataset
    from runners.tokenizer import load_tokenizer
    return build_dataset(recipe, load_tokenizer(recipe), cache_root(), processes)


def resolve_auto_resume(recipe: Recipe, out_dir: Path) -> str:
    """`--resume-auto` (one command a scheduler may requeue): the folder's state says what to do (runners.rundir.
    auto_resume_mode); a finished run is reported as already complete and not trained again."""
    from runners.environment import cache_root
    from runners.rundir import auto_resume_mode
    mode = auto_resume_mode(out_dir, recipe, cache_root())
    messages = {"complete": "already complete: nothing to train (its report follows)",
                "resume": "continuing the run from its last checkpoint",
                "restart": "the run stopped before its first checkpoint: starting it again from step 0"}
    if mode in messages:
        sys.stderr.write(f"advisor: {out_dir}: {messages[mode]}\n")
    return mode


def visible_gpus() -> int:
    """CUDA devices this process can see (CUDA_VISIBLE_DEVICES applied); 0 without CUDA."""
    import torch
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def check_process_count(recipe: Recipe, gpus: int) -> None:
    """Policy: one process per visible GPU. More processes than GPUs only when the recipe asks for CPU ranks
    (launch.backend: gloo); otherwise refuse in one line before torchrun starts them all on a few cores."""
    n = recipe.launch.nproc_per_node
    if n <= gpus or recipe.launch.backend == "gloo":
        return
    seen = f"{gpus} visible GPU(s)" if gpus else "no CUDA GPU"
    raise AdvisorError(f"launch.nproc_per_node {n} needs {n} GPUs but this machine has {seen}: lower --nproc-per-node, "
                       "or set launch.backend: gloo to run the ranks on the CPU")


def _check_fit_before_launch(recipe: Recipe, gpu: str | None, calibration: Calibration | None, force: bool) -> None:
    """The fit verdict before torchrun starts any rank (each rank checks again, against its own device)."""
    from advisor.catalog.load import get_gpu, match_gpu
    from runners.run import check_fit
    memory = None
    if gpu:
        entry = get_gpu(gpu)
    elif recipe.launch.backend != "gloo" and visible_gpus():
        import torch
        props = torch.cuda.get_device_properties(0)
        memory = props.total_memory / 2**30
        entry = match_gpu(props.name, memory)
    else:
        entry = None
    check_fit(recipe, entry, memory, calibration, recipe.world_size, force)


def _run_forwarding_signals(command: list[str]) -> int:
    """Run torchrun and wait for it; SIGINT/SIGTERM are passed on (torchrun passes them to every worker, which
    checkpoints and exits) instead of killing it mid-checkpoint as subprocess.run would."""
    import signal
    child = subprocess.Popen(command, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    previous = {}

    def forward(signum, frame):
        if child.poll() is None:
            child.send_signal(signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, forward)
    try:
        return child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def torchrun_command(recipe: Recipe, recipe_path: Path, out_dir: Path, resume: bool, overwrite: bool, force: bool,
                     calibration: Calibration | None, overrides: list[str], node_rank: int | None,
                     rdzv_endpoint: str | None, gpu: str | None = None, allow_changes: bool = False) -> list[str]:
    """torchrun (python -m torch.distributed.run) running runners.worker in every process."""
    launch_args = [f"--nproc-per-node={recipe.launch.nproc_per_node}", f"--nnodes={recipe.launch.nnodes}"]
    if recipe.launch.nnodes == 1 and rdzv_endpoint is None:
        launch_args.append("--standalone")
    else:
        if rdzv_endpoint is None:
            raise AdvisorError("several nodes need --rdzv-endpoint host:port (the same on every node)")
        launch_args += [f"--node-rank={node_rank or 0}", "--rdzv-backend=c10d", f"--rdzv-endpoint={rdzv_endpoint}"]
    worker = [str(recipe_path), "--out", str(out_dir)]
    worker += ["--resume"] if resume else []
    worker += ["--overwrite"] if overwrite else []
    worker += ["--allow-changes"] if allow_changes else []
    worker += ["--force"] if force else []
    worker += ["--gpu", gpu] if gpu else []
    worker += ["--calibration", str(calibration.path)] if calibration and calibration.path else []
    for assignment in overrides:
        worker += ["--set", assignment]
    return [sys.executable, "-m", "torch.distributed.run", *launch_args, "-m", "runners.worker", *worker]
