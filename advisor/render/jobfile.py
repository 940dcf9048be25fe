"""A JobSpec (advisor.plan.jobspec) as the file a scheduler reads: a Slurm batch script or a SkyPilot task YAML.

Nothing the user chose is formatted into either file as code: shell words go through `shlex.quote`, YAML through
PyYAML's SafeDumper, and a value holding a newline or a NUL is refused (one line naming the flag or key), since
`#SBATCH` lines end at a newline whatever the quoting. Secrets are never written: they pass through the environment
by name (advisor.plan.jobspec.SECRET_ENV_VARS).
"""

from __future__ import annotations

import shlex

import yaml

from advisor.core.errors import AdvisorError
from advisor.plan.jobspec import RDZV_PORT_BASE, RDZV_PORT_SPREAD, JobSpec

# SkyPilot's accelerator names where the GPU catalog's differ (`sky show-gpus`); the others are the same name.
SKYPILOT_ACCELERATORS = {"H100-SXM": "H100", "H100-PCIe": "H100", "A100-40GB": "A100", "V100-16GB": "V100",
                         "V100-32GB": "V100-32GB", "RTX-4090": "RTX4090", "RTX-3090": "RTX3090",
                         "RTX-A6000": "A6000", "RTX-6000-Ada": "RTX6000-Ada", "H200-NVL": "H200"}
SKYPILOT_HEADER = ("# SkyPilot task written by `advisor launch` (sky launch THIS_FILE). Paths are relative to workdir, which\n"
                   "# SkyPilot copies to each node. --resume-auto continues after a preemption only if the run folder\n"
                   "# outlives the VM: put --out on a bucket mount (file_mounts).\n")


def checked(label: str, value: str) -> str:
    """`value` unchanged if it can be embedded in a job file at all: no newline, carriage return or NUL (which would
    end a `#SBATCH` line or a YAML scalar's meaning)."""
    if any(c in value for c in "\n\r\0"):
        raise AdvisorError(f"{label} {value!r} holds a newline or NUL character, which a job file cannot carry: rename it")
    return value


def slurm_time(seconds: int) -> str:
    """Slurm's `--time` as days-hours:minutes:seconds (sbatch(1) accepts "days-hours:minutes:seconds")."""
    days, rest = divmod(int(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{days}-{hours:02d}:{minutes:02d}:{secs:02d}"


def _sbatch(option: str, value: str | int) -> str:
    """One `#SBATCH --option=value` line. Slurm reads these lines itself (not the shell): the value is shell-quoted
    anyway, which sbatch accepts, so a value with spaces or quotes stays one word."""
    return f"#SBATCH --{option}={shlex.quote(checked('--' + option, str(value)))}"


def runner_words(spec: JobSpec) -> list[str]:
    """The node's command (`advisor run RECIPE --out RUN --resume-auto`), each word checked as `checked` does."""
    return [checked("the job's command word", word) for word in spec.runner]


def slurm_script(spec: JobSpec) -> str:
    """The sbatch script: resources from the spec, requeue on preemption, USR1 before the time limit (the script
    sends the step's tasks SIGTERM, on which the run checkpoints and stops, then requeues the job), logs appended across
    restarts, and one srun task per node running the runner with torchrun's rendezvous from Slurm's environment."""
    o = spec.options
    log = f"{spec.run_dir}.slurm-%j.out"
    lines = ["#!/bin/bash", _sbatch("job-name", spec.name), _sbatch("nodes", spec.nodes),
             _sbatch("ntasks-per-node", 1), _sbatch("cpus-per-task", spec.cpus_per_task)]
    if spec.gpus_per_node:
        lines.append(_sbatch("gpus-per-node", spec.gpus_per_node))
    lines.append(_sbatch("mem", f"{spec.mem_gib}G" if spec.mem_gib else "0"))
    lines += [_sbatch("time", slurm_time(spec.time_limit_s)), "#SBATCH --requeue",
              _sbatch("signal", f"B:USR1@{spec.signal_before_end_s}"), "#SBATCH --open-mode=append",
              _sbatch("output", log), "#SBATCH --export=ALL"]
    lines += [_sbatch(name, value) for name, value in (("partition", o.partition), ("account", o.account),
                                                       ("qos", o.qos)) if value]
    runner = shlex.join(runner_words(spec))
    if spec.nodes > 1:
        runner += ' --node-rank "$SLURM_NODEID" --rdzv-endpoint "$RDZV_ENDPOINT"'
    lines += [
        f"# time limit: {spec.time_basis}",
        "# credentials (HF_TOKEN, WANDB_API_KEY, ...) come from the submitting environment (--export=ALL), never this file",
        "set -u",
        *([] if spec.nodes == 1 else [
            "# torchrun's rendezvous on the job's first node; the port from the job id, so jobs sharing a node differ",
            "head=$(scontrol show hostnames \"$SLURM_JOB_NODELIST\" | head -n 1)",
            f"export RDZV_ENDPOINT=\"$head:$(( {RDZV_PORT_BASE} + SLURM_JOB_ID % {RDZV_PORT_SPREAD} ))\""]),
        "echo \"job $SLURM_JOB_ID restart ${SLURM_RESTART_COUNT:-0} on $SLURM_JOB_NODELIST\"",
        "# before the time limit: SIGTERM to the step's tasks on every node (srun itself would kill them): the run",
        "# checkpoints and stops; then the job goes back in the queue",
        "on_usr1() { echo \"time limit near: checkpoint and requeue\"; scancel --signal=TERM \"$SLURM_JOB_ID.0\"; "
        "wait \"$step\"; scontrol requeue \"$SLURM_JOB_ID\"; exit 0; }",
        "trap on_usr1 USR1",
        f"srun --ntasks-per-node=1 --kill-on-bad-exit=1 bash -c {shlex.quote(runner)} &",
        "step=$!",
        "wait \"$step\"",
    ]
    return "\n".join(lines) + "\n"


def skypilot_task(spec: JobSpec) -> str:
    """The SkyPilot task YAML: resources (accelerators `TYPE:N`, cloud, region, spot), num_nodes, the setup, and a
    run command taking its rendezvous from SKYPILOT_NODE_RANK, SKYPILOT_NODE_IPS and SKYPILOT_NUM_GPUS_PER_NODE.
    Secrets are `secrets` keys with no value: SkyPilot fills them from the launching environment."""
    o = spec.options
    resources: dict = {}
    if spec.accelerator:
        name = SKYPILOT_ACCELERATORS.get(spec.accelerator, spec.accelerator)
        resources["accelerators"] = f"{checked('launch.gpu', name)}:{spec.gpus_per_node}"
    else:
        resources["cpus"] = f"{spec.cpus_per_task}+"
    if o.cloud:
        resources["cloud"] = checked("--cloud", o.cloud)
    if o.region:
        resources["region"] = checked("--region", o.region)
    if o.spot:
        resources["use_spot"] = True
    words = [spec.relative(w) for w in runner_words(spec)]
    runner = shlex.join(words)
    if spec.gpus_per_node:
        runner += ' --nproc-per-node "$SKYPILOT_NUM_GPUS_PER_NODE"'
    if spec.nodes > 1:
        runner = ('head=$(echo "$SKYPILOT_NODE_IPS" | head -n 1)\n' + runner + ' --nnodes "$SKYPILOT_NUM_NODES" '
                  f'--node-rank "$SKYPILOT_NODE_RANK" --rdzv-endpoint "$head:{RDZV_PORT_BASE}"')
    task = {"name": checked("name", spec.name), "workdir": checked("workdir", spec.workdir), "resources": resources,
            "num_nodes": spec.nodes, **({"secrets": {name: None for name in spec.secret_env}} if spec.secret_env else {}),
            "setup": checked("--setup", o.setup_command) + "\n", "run": runner + "\n"}
    return SKYPILOT_HEADER + yaml.dump(task, Dumper=_BlockSafeDumper, sort_keys=False, allow_unicode=True)


class _BlockSafeDumper(yaml.SafeDumper):
    """yaml.SafeDumper writing multi-line strings (setup, run) as literal blocks, as people write SkyPilot tasks."""


def _str_block(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockSafeDumper.add_representer(str, _str_block)
