"""`advisor launch`: a recipe as a Slurm batch script or a SkyPilot task (advisor.plan.jobspec, advisor.render.jobfile),
written beside the run folder and, with --submit, handed to sbatch or SkyPilot."""

import os
import shutil
import subprocess
from pathlib import Path
from typing import Annotated, Optional

import typer

from advisor.cli.app import app
from advisor.cli.options import JsonFlag, _duration_days, _emit_json, _number, _refuse_overwriting_inputs, _write_text
from advisor.core.errors import AdvisorError

# sbatch answers in seconds; a scheduler that does not answer in this long is reported, not waited on
SBATCH_TIMEOUT_S = 60


def _seconds(text: str) -> int:
    """--time-limit as people write it (90m is not offered: 1.5h, 36h, 2d), in whole seconds."""
    return max(1, round(_duration_days(text) * 86400))


@app.command()
def launch(
    recipe: Annotated[Path, typer.Argument(help="Recipe YAML (e.g. from advisor recommend --recipe-out).")],
    target: Annotated[str, typer.Option(help="slurm (a batch script for sbatch) | skypilot (a task YAML for sky launch).")],
    out: Annotated[Optional[Path], typer.Option(help="Run directory the job writes (default runs/<recipe name>).")] = None,
    job_file: Annotated[Optional[Path], typer.Option(help="Where to write the job file (default: beside the run folder, RUN.sbatch or RUN.sky.yaml).")] = None,
    submit: Annotated[bool, typer.Option("--submit", help="Also submit it: sbatch, or SkyPilot's Python API.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing job file.")] = False,
    partition: Annotated[Optional[str], typer.Option(help="Slurm partition.")] = None,
    account: Annotated[Optional[str], typer.Option(help="Slurm account.")] = None,
    qos: Annotated[Optional[str], typer.Option(help="Slurm quality of service.")] = None,
    time_limit: Annotated[Optional[str], typer.Option(help="The job's time limit (36h, 2d, 0.5h) instead of the estimate's upper bound x the margin.")] = None,
    time_margin: Annotated[Optional[float], typer.Option(parser=_number(upper=100), help="Multiplies the estimate's upper bound (default advisor.plan.jobspec.TIME_MARGIN).")] = None,
    cpus_per_task: Annotated[Optional[int], typer.Option(parser=_number(integer=True, upper=4096), help="CPU cores per node (default 8 per GPU, 1 per CPU rank).")] = None,
    mem_gib: Annotated[Optional[int], typer.Option(parser=_number(integer=True, upper=1_000_000), help="Host memory per node, GiB (default: all of the node's).")] = None,
    cloud: Annotated[Optional[str], typer.Option(help="SkyPilot cloud (aws, gcp, azure, kubernetes, ...; default: SkyPilot picks).")] = None,
    region: Annotated[Optional[str], typer.Option(help="SkyPilot region.")] = None,
    spot: Annotated[bool, typer.Option("--spot", help="SkyPilot: spot instances (preemptible; --resume-auto continues the run).")] = False,
    advisor_command: Annotated[str, typer.Option(help="How the job's nodes run the advisor (a command on their PATH, or a path).")] = "advisor",
    setup: Annotated[Optional[str], typer.Option(help="SkyPilot: the setup command a fresh VM runs (default: pip install 'rightsize[runner]').")] = None,
    as_json: JsonFlag = False,
):
    """Write a job for a recipe: resources and a time limit from its estimate, one requeue-safe `advisor run
    --resume-auto` per node with torchrun's rendezvous from the scheduler's environment; --submit hands it over."""
    from advisor.plan.jobspec import (
        SECRET_ENV_VARS, TARGETS, TIME_MARGIN, ClusterOptions, default_job_file, job_spec,
    )
    from advisor.plan.recipe import check_inputs, load_recipe
    from advisor.render.jobfile import checked, skypilot_task, slurm_script
    from advisor.formulas.setup import one_of

    one_of("--target", target, TARGETS)
    loaded = load_recipe(recipe)
    check_inputs(loaded, recipe)
    run_dir = out or Path("runs") / loaded.name
    path = job_file or default_job_file(run_dir, target)  # type: ignore[arg-type]  # one_of checked it
    _check_job_file(path, run_dir, overwrite, {"RECIPE": [recipe], "data.path": [loaded.data.path]})
    for flag, value in (("--partition", partition), ("--account", account), ("--qos", qos), ("--cloud", cloud),
                        ("--region", region), ("--advisor-command", advisor_command), ("--setup", setup),
                        ("--out", str(run_dir))):
        if value is not None:
            checked(flag, value)
    options = ClusterOptions(partition=partition, account=account, qos=qos, cloud=cloud, region=region, spot=spot,
                             cpus_per_task=cpus_per_task, mem_gib=mem_gib,
                             time_limit_s=_seconds(time_limit) if time_limit else None,
                             time_margin=time_margin if time_margin is not None else TIME_MARGIN,
                             advisor_command=advisor_command, **({"setup_command": setup} if setup else {}),
                             secret_names=tuple(name for name in SECRET_ENV_VARS if name in os.environ))
    spec = job_spec(loaded, recipe, run_dir, options)
    _write_text(path, slurm_script(spec) if target == "slurm" else skypilot_task(spec))
    submitted = (_sbatch(path) if target == "slurm" else _sky_launch(path)) if submit else None
    if as_json:
        from advisor.core.convert import to_json
        _emit_json({"job_file": str(path), "target": target, "spec": to_json(spec), "submitted": submitted})
        return
    gpus = f" x {spec.gpus_per_node} {spec.accelerator}" if spec.gpus_per_node else f" x {spec.procs_per_node} CPU ranks"
    typer.echo(f"Wrote {path}: {spec.nodes} node(s){gpus}, time limit {spec.time_limit_s / 3600:.2f} h "
               f"({spec.time_basis}), run folder {spec.run_dir}")
    if submitted:
        typer.echo(f"Submitted: {submitted}")
    else:
        typer.echo(f"Submit it with: {'sbatch' if target == 'slurm' else 'sky launch'} {path}")


def _check_job_file(path: Path, run_dir: Path, overwrite: bool, inputs: dict[str, list]) -> None:
    """The job file is none of the inputs, not inside the run folder (whose files are the run's), and replaces an
    existing file only with --overwrite."""
    _refuse_overwriting_inputs("--job-file", path, inputs)
    if Path(path).expanduser().resolve().is_relative_to(Path(run_dir).expanduser().resolve()):
        raise AdvisorError(f"--job-file {path} is inside the run folder {run_dir}: advisor run refuses a folder holding "
                           "files it did not write; choose a path outside it", flag="--job-file")
    if path.is_dir():
        raise AdvisorError(f"--job-file {path} is a directory: give a file path", flag="--job-file")
    if path.exists() and not overwrite:
        raise AdvisorError(f"--job-file {path} exists: choose another path, or pass --overwrite to replace it",
                           flag="--job-file")


def _sbatch(path: Path) -> str:
    """Submit with sbatch; its job id, or one line saying why not."""
    sbatch = shutil.which("sbatch")
    if sbatch is None:
        raise AdvisorError(f"--submit: sbatch is not on PATH (no Slurm client here): submit {path} with sbatch on the "
                           "cluster's login node", flag="--submit")
    try:
        done = subprocess.run([sbatch, "--parsable", str(path)], capture_output=True, text=True,
                              timeout=SBATCH_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise AdvisorError(f"--submit: sbatch did not answer within {SBATCH_TIMEOUT_S} s", flag="--submit") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
        raise AdvisorError(f"--submit: sbatch refused {path}: {last}", flag="--submit")
    return f"slurm job {done.stdout.strip().split(';')[0]}"


def _secrets_to_pass(path: Path) -> list[str]:
    """The secrets a task names with no value, that this environment sets: SkyPilot takes them from here at launch."""
    import yaml
    names = (yaml.safe_load(path.read_text()) or {}).get("secrets") or {}
    return [n for n, v in names.items() if v is None and n in os.environ]


def _sky_launch(path: Path) -> str:
    """Launch with SkyPilot's Python API (optional extra `rightsize[launch]`); one line if it is not installed."""
    try:
        import sky  # type: ignore[import-not-found]
    except ImportError:
        raise AdvisorError(f"--submit: SkyPilot is not installed (pip install 'rightsize[launch]'), or run: sky launch "
                           f"{path}", flag="--submit") from None
    import yaml
    secrets = [(name, os.environ[name]) for name in _secrets_to_pass(path)]
    task = sky.Task.from_yaml_config(yaml.safe_load(path.read_text()), secrets_overrides=secrets or None)
    request = sky.launch(task)
    result = sky.stream_and_get(request) if hasattr(sky, "stream_and_get") else request
    return f"skypilot {result}"
