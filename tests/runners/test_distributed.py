"""`on_rank_zero`: rank 0 does the work, every rank gets its result or its error — in one process and across two
gloo processes."""

import json
import socket
from pathlib import Path

import pytest
import torch

from advisor.core.errors import AdvisorError
from runners.checkpoint import CheckpointError
from runners.distributed import DistContext, on_rank_zero

ONE_PROCESS = DistContext(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"))


class _Unbuildable(Exception):
    def __init__(self, code: int, detail: str):
        super().__init__(f"{code}: {detail}")


def _fail(error: Exception):
    def work():
        raise error
    return work


def test_one_process_returns_the_result_and_raises_the_error():
    assert on_rank_zero(ONE_PROCESS, lambda: {"path": "/runs/a"}) == {"path": "/runs/a"}
    error = AdvisorError("--out x: is a file")
    with pytest.raises(AdvisorError) as raised:
        on_rank_zero(ONE_PROCESS, _fail(error))
    assert raised.value is error


def _rank(rank: int, port: int, out_dir: str) -> None:
    """One of two gloo ranks: what each on_rank_zero call gave this rank, written to rank-N.json."""
    import os

    import torch.distributed as dist
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    ctx = DistContext(rank=rank, local_rank=rank, world_size=2, device=torch.device("cpu"))
    seen = {"value": on_rank_zero(ctx, lambda: f"made by rank {ctx.rank}")}
    for name, error in (("advisor", AdvisorError("data.path d: no examples")),
                        ("checkpoint", CheckpointError("could not save the checkpoint of step 4")),
                        ("unbuildable", _Unbuildable(28, "no space"))):
        try:
            on_rank_zero(ctx, _fail(error))
        except Exception as exc:  # noqa: BLE001 - what each rank raised is the result
            seen[name] = [type(exc).__name__, str(exc)]
    dist.destroy_process_group()
    (Path(out_dir) / f"rank-{rank}.json").write_text(json.dumps(seen))


@pytest.mark.slow
def test_two_gloo_ranks_share_rank_zero_result_and_error(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    torch.multiprocessing.spawn(_rank, args=(port, str(tmp_path)), nprocs=2)
    zero, one = (json.loads((tmp_path / f"rank-{r}.json").read_text()) for r in (0, 1))
    assert zero["value"] == one["value"] == "made by rank 0"
    assert zero["advisor"] == one["advisor"] == ["AdvisorError", "data.path d: no examples"]
    assert zero["checkpoint"] == one["checkpoint"] == ["CheckpointError", "could not save the checkpoint of step 4"]
    assert zero["unbuildable"] == ["_Unbuildable", "28: no space"]  # rank 0 raises its own
    assert one["unbuildable"] == ["RuntimeError", "rank 0 failed: _Unbuildable: 28: no space"]
