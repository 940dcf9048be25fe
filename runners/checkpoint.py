"""Resumable checkpoints: the adapters, optimizer, RNG and loop state, written atomically; the newest intact one wins."""

import hashlib
import io
import json
import random
import shutil
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import cast

import torch

from runners.distributed import DistContext, on_rank_zero
from runners.io import atomic_replace_dir

CHECKPOINTS = "checkpoints"
KEEP_CHECKPOINTS = 2  # the newest and the one before it, in case the newest is being written when the run dies


class CheckpointError(RuntimeError):
    """A checkpoint could not be written; the previous one is intact."""


@dataclass
class LoopState:
    """The training loop's counters: what a checkpoint's state.json holds and a resume restores."""

    step: int = 0
    tokens: int = 0                # input tokens trained on (rows hold no padding)
    processed_tokens: int = 0      # what the GPUs computed, padding included
    wall_seconds: float = 0.0      # optimizer steps only (eval and checkpoints are timed apart)
    eval_seconds: float = 0.0
    checkpoint_seconds: float = 0.0
    first_loss: float | None = None
    last_loss: float | None = None

    @classmethod
    def from_json(cls, data: dict) -> "LoopState":
        """A state.json's fields (older checkpoints may lack some: they keep their defaults)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def _state_dict_options(**kw):
    from torch.distributed.checkpoint.state_dict import StateDictOptions
    return StateDictOptions(full_state_dict=True, ignore_frozen_params=True, **kw)


def _rng_state() -> dict:
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    try:
        import numpy as np
        # the global generator is MT19937, whose legacy state is this tuple (a dict only for other bit generators)
        legacy = cast("tuple[str, np.ndarray, int, int, float]", np.random.get_state(legacy=True))
        kind, keys, pos, has_gauss, cached = legacy
        state["numpy"] = [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)]
    except ImportError:
        pass
    return state


def _set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "numpy" in state:
        import numpy as np
        kind, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))


def latest_checkpoint(out_dir: Path) -> Path | None:
    """The newest complete checkpoint (a directory is only published, by rename, once fully written)."""
    root = Path(out_dir) / CHECKPOINTS
    candidates = sorted(p for p in root.glob("step-*") if (p / "state.json").is_file()) if root.is_dir() else []
    return candidates[-1] if candidates else None


def checkpoint_damage(path: Path) -> str | None:
    """Why a checkpoint cannot be resumed from, or None when it is intact: its state.json must parse and its
    trainer.pt match the size and SHA-256 recorded at save time (older checkpoints, without them: must load)."""
    try:
        state = json.loads((path / "state.json").read_text())
        LoopState.from_json(state)
    except (OSError, ValueError, TypeError) as exc:
        return f"state.json unreadable ({exc.__class__.__name__})"
    trainer = path / "trainer.pt"
    if not trainer.is_file():
        return "trainer.pt missing"
    size = trainer.stat().st_size
    if "trainer_bytes" in state and size != state["trainer_bytes"]:
        return f"trainer.pt is {size} bytes, {state['trainer_bytes']} were written"
    if "trainer_sha256" in state:
        digest = hashlib.sha256()
        with trainer.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
        return None if digest.hexdigest() == state["trainer_sha256"] else "trainer.pt does not match its checksum"
    try:
        torch.load(trainer, weights_only=True, map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - any failure to read means: not resumable
        return f"trainer.pt unreadable ({str(exc).splitlines()[0][:80] if str(exc) else exc.__class__.__name__})"
    return None


def intact_checkpoint(out_dir: Path) -> tuple[Path | None, list[str]]:
    """The newest intact checkpoint, and one note per newer damaged one skipped on the way."""
    root = Path(out_dir) / CHECKPOINTS
    candidates = sorted((p for p in root.glob("step-*") if (p / "state.json").is_file()), reverse=True) if root.is_dir() else []
    skipped = []
    for path in candidates:
        damage = checkpoint_damage(path)
        if damage is None:
            return path, skipped
        skipped.append(f"{path.name}: {damage}")
    return None, skipped


def save_checkpoint(model, optimizer, state: LoopState, ctx: DistContext, out_dir: Path) -> Path:
    """Adapters, optimizer, RNG and loop state, gathered on every rank and written by rank 0 to a temporary directory
    renamed into place; a failed write stops every rank with the same CheckpointError."""
    from torch.distributed.checkpoint.state_dict import get_state_dict
    model_sd, optim_sd = get_state_dict(model, optimizer, options=_state_dict_options(cpu_offload=ctx.distributed))
    final = Path(out_dir) / CHECKPOINTS / f"step-{state.step:08d}"
    on_rank_zero(ctx, lambda: _write_checkpoint({"model": model_sd, "optimizer": optim_sd, "rng": _rng_state()}, state,
                                                final))
    return final


def _write_checkpoint(blob: dict, state: LoopState, final: Path) -> None:
    """Rank 0: trainer.pt, then state.json (which marks the directory complete), renamed to `final`; only the newest
    KEEP_CHECKPOINTS stay. On a full disk, say, the previous checkpoint is untouched and named in the error."""
    tmp = final.with_name(f".{final.name}.tmp")
    out_dir = final.parent.parent
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        buffer = io.BytesIO()
        torch.save(blob, buffer)
        data = buffer.getvalue()
        (tmp / "trainer.pt").write_bytes(data)
        integrity = {"trainer_bytes": len(data), "trainer_sha256": hashlib.sha256(data).hexdigest()}
        # written last: marks the directory complete, and lets a resume tell a damaged trainer.pt from an intact one
        (tmp / "state.json").write_text(json.dumps(asdict(state) | integrity, indent=2))
        atomic_replace_dir(tmp, final)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        previous = latest_checkpoint(out_dir)
        raise CheckpointError(f"could not save the checkpoint of step {state.step} ({exc.strerror or exc}); "
                              + (f"{previous.name} is intact: free space, then --resume" if previous else
                                 "no earlier checkpoint")) from None
    for old in sorted((out_dir / CHECKPOINTS).glob("step-*"))[:-KEEP_CHECKPOINTS]:
        shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(model, optimizer, ctx: DistContext, path: Path) -> LoopState:
    """Restore a checkpoint on every rank (weights_only: checkpoints never execute code on load)."""
    from torch.distributed.checkpoint.state_dict import set_state_dict
    try:
        blob = torch.load(path / "trainer.pt", weights_only=True, map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - a damaged file: name it instead of torch's "Invalid argument"
        raise CheckpointError(f"{path / 'trainer.pt'}: cannot be read ({str(exc).splitlines()[0][:120]})") from None
    # Not strict: under DDP the strict check also asks for the frozen base weights a checkpoint never holds
    # (ignore_frozen_params), so a two-process resume failed with "Missing key ...embed_tokens.weight". Instead every
    # saved tensor must land (no unexpected key) and the checkpoint must hold one tensor per trainable parameter.
    saved = len(blob["model"])  # counted first: set_state_dict fills the dict it is given with the frozen weights
    trainable = sum(1 for p in model.parameters() if p.requires_grad)
    if saved != trainable:
        raise CheckpointError(f"{path / 'trainer.pt'}: holds {saved} tensors for a model with {trainable} trainable "
                              "parameters: it is another model's checkpoint")
    loaded = set_state_dict(model, optimizer, model_state_dict=blob["model"], optim_state_dict=blob["optimizer"],
                            options=_state_dict_options(strict=False))
    unexpected = list(getattr(loaded, "unexpected_keys", []) or [])
    if unexpected:
        raise CheckpointError(f"{path / 'trainer.pt'}: tensors this model does not have ({', '.join(unexpected[:3])}): "
                              "it is another model's checkpoint")
    _set_rng_state(blob["rng"])
    return LoopState.from_json(json.loads((path / "state.json").read_text()))
