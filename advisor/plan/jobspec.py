"""A recipe as a scheduler job (`advisor launch`): nodes, GPUs, CPUs, memory and a time limit from the estimate, and the
one requeue-safe command every node runs. advisor.render.jobfile writes it as a Slurm script or a SkyPilot task.

- The time limit is the estimate's upper bound (the 80% interval's `gpu_hours_high`, per GPU) times TIME_MARGIN,
  plus STARTUP_ALLOWANCE_S; from the recipe's `plan` section when it has one, else from `advisor estimate`'s own
  numbers for the recipe, else `--time-limit`.
- Every node runs `advisor run RECIPE --out RUN --resume-auto`: a requeued or restarted job continues the run from
  its last checkpoint, and a finished one exits 0.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

from msgspec import Struct

from advisor.core.errors import AdvisorError
from advisor.plan.recipe import Recipe

Target = Literal["slurm", "skypilot"]
TARGETS: tuple[Target, ...] = ("slurm", "skypilot")

# The time limit is the estimate's upper bound times this: the bound is an 80% interval's (advisor.plan.uncertainty),
# so one run in ten lands above it by construction; a quarter more covers most of those. A job that still reaches
# its limit checkpoints on SIGNAL_BEFORE_END_S's signal and is requeued, so the margin costs queue time, not work.
TIME_MARGIN = 1.25
# Added to every time limit: loading the model and tokenizing the data happen before the first step, and the estimate
# covers the training steps only (advisor.plan.recipe_setup). An allowance, not a measurement.
STARTUP_ALLOWANCE_S = 600
# Slurm signals the job this long before its time limit (`--signal=USR1@...`): the run saves a checkpoint at the next
# step boundary and the job requeues itself. Slurm may send it up to 60 s early (sbatch(1), --signal).
SIGNAL_BEFORE_END_S = 300
# CPU cores asked per GPU, for data loading and tokenization: a DGX H100 has 14 per GPU (112 cores, 8 GPUs) and a
# DGX A100 16 (128, 8); 8 fits either with room for partitions that cap cores per GPU. --cpus-per-task overrides it.
CPUS_PER_GPU = 8
# CPU ranks (launch.backend gloo, no GPU): one core each.
CPUS_PER_CPU_RANK = 1
# The rendezvous port on the head node: torchrun's default (29500) plus the job id modulo this, so two jobs sharing
# a head node do not collide.
RDZV_PORT_BASE = 29500
RDZV_PORT_SPREAD = 1000
# Credentials the job may need from the submitting environment, passed by name, never by value (Slurm: --export=ALL
# passes the submitter's environment; SkyPilot: `secrets` keys with no value, given at launch: sky launch --secret NAME).
SECRET_ENV_VARS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "WANDB_API_KEY", "MLFLOW_TRACKING_TOKEN",
                   "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
# The runner's requeue-safe resume (advisor run --resume-auto): start, continue from the last checkpoint, or exit 0
# when already complete.
RESUME_AUTO_ARGS = ("--resume-auto",)


class ClusterOptions(Struct, frozen=True, kw_only=True):
    """What the user tells `advisor launch` about their cluster (each None: the scheduler's default)."""
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    cloud: str | None = None
    region: str | None = None
    spot: bool = False
    cpus_per_task: int | None = None
    mem_gib: int | None = None
    time_limit_s: int | None = None
    time_margin: float = TIME_MARGIN
    advisor_command: str = "advisor"
    setup_command: str = "pip install 'rightsize[runner]'"  # SkyPilot: what a fresh VM installs before the run
    secret_names: tuple[str, ...] = ()  # of SECRET_ENV_VARS, those set where the job is written (names only)


class JobSpec(Struct, frozen=True, kw_only=True):
    """One job: what it asks the scheduler for and what each node runs. Paths are absolute (the job starts elsewhere)."""
    name: str                       # the recipe's name (a plain run name: advisor.plan.recipe.RUN_NAME)
    recipe: str                     # the recipe file
    run_dir: str                    # the run folder (`advisor run --out`)
    nodes: int
    procs_per_node: int             # torchrun processes on each node
    gpus_per_node: int              # 0: a CPU plan (launch.backend gloo, no launch.gpu)
    accelerator: str | None         # the GPU type (launch.gpu), as the catalog names it
    cpus_per_task: int              # one task per node
    mem_gib: int | None             # None: all of the node's memory
    time_limit_s: int
    time_basis: str                 # where the time limit comes from, in words
    signal_before_end_s: int
    runner: tuple[str, ...]         # `advisor run ...`: the same on every node; the node's rank and rendezvous follow
    secret_env: tuple[str, ...]     # passed through by name
    options: ClusterOptions
    workdir: str                    # the folder the job starts in (SkyPilot copies it to every node)

    def relative(self, path: str) -> str:
        """`path` relative to workdir where it lies inside it (SkyPilot's copy of the workdir is elsewhere), else as is."""
        inside = Path(path).is_relative_to(self.workdir) and path.startswith("/")
        return str(Path(path).relative_to(self.workdir)) if inside else path


def planned_tokens(recipe: Recipe) -> float | None:
    """The tokens `advisor estimate RECIPE` costs when it is given none: the plan's (what the recommendation costed),
    unless the recipe fixes its own length with train.max_steps. None: count the recipe's data as usual."""
    if recipe.plan is None or recipe.train.max_steps:
        return None
    return recipe.plan.tokens


def check_plan_matches(recipe: Recipe, source: str) -> None:
    """A plan section describes the GPUs it was estimated on: a recipe edited since (another count or GPU type) no
    longer matches it, and a time limit from it would be wrong. One line naming both values."""
    plan = recipe.plan
    if plan is None:
        return
    if plan.gpus != recipe.world_size:
        raise AdvisorError(f"{source}: plan.gpus {plan.gpus} but launch.nproc_per_node x launch.nnodes is "
                           f"{recipe.world_size}: the plan was estimated for {plan.gpus} GPUs; drop the plan section to "
                           "size the job from this recipe's own estimate, or give --time-limit")
    if recipe.launch.gpu is not None and plan.gpu != recipe.launch.gpu:
        raise AdvisorError(f"{source}: plan.gpu {plan.gpu} but launch.gpu {recipe.launch.gpu}: drop the plan section "
                           "to size the job from this recipe's own estimate, or give --time-limit")


def estimated_upper_gpu_hours(recipe: Recipe) -> float | None:
    """The upper bound on the recipe's GPU-hours as `advisor estimate RECIPE` gives it (its tokens from max_steps or
    the data file, on launch.gpu); None for a recipe that names no GPU (a CPU run costs no GPU-hours)."""
    if recipe.launch.gpu is None:
        return None
    from advisor.plan.estimate import estimate_recipe
    estimate = estimate_recipe(recipe)
    return estimate.gpu_hours_high if estimate.gpu_hours_high is not None else estimate.gpu_hours


def time_limit(recipe: Recipe, given_s: int | None, margin: float = TIME_MARGIN) -> tuple[int, str]:
    """Seconds the job may run and where that comes from: `--time-limit` as given; else the upper bound on GPU-hours
    (the plan's, else the recipe's estimate) per GPU, x the margin (TIME_MARGIN), + STARTUP_ALLOWANCE_S."""
    if given_s is not None:
        return given_s, "given (--time-limit)"
    if recipe.plan is not None:
        upper = recipe.plan.gpu_hours_high if recipe.plan.gpu_hours_high is not None else recipe.plan.gpu_hours
        basis = "plan.gpu_hours_high" if recipe.plan.gpu_hours_high is not None else "plan.gpu_hours (no interval)"
    elif (estimated := estimated_upper_gpu_hours(recipe)) is not None:
        upper, basis = estimated, "advisor estimate's gpu_hours_high"
    else:
        raise AdvisorError("no time limit: the recipe has no plan section and names no launch.gpu to estimate one "
                           "(a CPU run costs no GPU-hours); give --time-limit, e.g. --time-limit 2h", flag="--time-limit")
    seconds = math.ceil(upper / recipe.world_size * 3600 * margin) + STARTUP_ALLOWANCE_S
    return seconds, (f"{basis} {upper:,.1f} / {recipe.world_size} GPUs x {margin:g} margin + "
                     f"{STARTUP_ALLOWANCE_S // 60} min start-up")


def signal_lead(time_limit_s: int) -> int:
    """Seconds before the time limit Slurm signals the job: SIGNAL_BEFORE_END_S, or a quarter of a shorter limit (a
    signal due before the job starts would stop it at once)."""
    return min(SIGNAL_BEFORE_END_S, time_limit_s // 4)


def is_cpu_plan(recipe: Recipe) -> bool:
    """A plan for CPU ranks: gloo named and no GPU type; its job asks for no GPUs."""
    return recipe.launch.backend == "gloo" and recipe.launch.gpu is None


def job_spec(recipe: Recipe, recipe_path: Path, run_dir: Path, options: ClusterOptions) -> JobSpec:
    """The job for `recipe`: one task per node of launch.nproc_per_node processes, GPUs per node unless it is a CPU
    plan, CPUs from CPUS_PER_GPU (or one per CPU rank), the time limit of `time_limit`, and the runner command."""
    if options.time_limit_s is None:  # the plan's time applies only to the GPUs it was estimated on
        check_plan_matches(recipe, str(recipe_path))
    seconds, basis = time_limit(recipe, options.time_limit_s, options.time_margin)
    cpu = is_cpu_plan(recipe)
    procs = recipe.launch.nproc_per_node
    cpus = options.cpus_per_task or procs * (CPUS_PER_CPU_RANK if cpu else CPUS_PER_GPU)
    recipe_file, out = Path(recipe_path).expanduser().resolve(), Path(run_dir).expanduser().resolve()
    runner = (options.advisor_command, "run", str(recipe_file), "--out", str(out), *RESUME_AUTO_ARGS)
    return JobSpec(name=recipe.name, recipe=str(recipe_file), run_dir=str(out), nodes=recipe.launch.nnodes,
                   procs_per_node=procs, gpus_per_node=0 if cpu else procs,
                   accelerator=None if cpu else recipe.launch.gpu, cpus_per_task=cpus, mem_gib=options.mem_gib,
                   time_limit_s=seconds, time_basis=basis, signal_before_end_s=signal_lead(seconds), runner=runner,
                   secret_env=options.secret_names, options=options, workdir=str(Path.cwd().resolve()))


def default_job_file(run_dir: Path, target: Target) -> Path:
    """Where the job file goes: beside the run folder, named after it (RUN.sbatch, RUN.sky.yaml). Not inside it: a run
    folder holds only what the run writes, and `advisor run` refuses one holding anything else."""
    run_dir = Path(run_dir)
    return run_dir.with_name(run_dir.name + (".sbatch" if target == "slurm" else ".sky.yaml"))
