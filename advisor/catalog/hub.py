"""A hub id's config.json: from the local Hugging Face cache (offline), else fetched alone from the hub when online.

The cache is read the way huggingface_hub lays it out (HF_HUB_CACHE, else HF_HOME/hub, else
~/.cache/huggingface/hub; models--org--name/snapshots/<revision>/config.json, the revision refs/main names first).
huggingface_hub is imported only when a download is needed, so the advisor's start-up stays light.
"""

import os
import re
from pathlib import Path

from advisor.core.errors import AdvisorError

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def looks_like_hub_id(name: str) -> bool:
    """org/name, as the hub spells repository ids (not a path that exists on disk)."""
    return bool(_HUB_ID.match(name.strip())) and not Path(name).expanduser().exists()


def hf_cache_dir() -> Path:
    """Where huggingface_hub keeps downloaded repositories (its own environment variables, same precedence)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    base = Path(os.environ["XDG_CACHE_HOME"]).expanduser() if os.environ.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    return base / "huggingface" / "hub"


def cached_config(hub_id: str, cache: Path | None = None) -> Path | None:
    """config.json of `hub_id` in the local cache: the snapshot refs/main points to, else the newest one."""
    repo = (cache or hf_cache_dir()) / ("models--" + hub_id.replace("/", "--"))
    snapshots = repo / "snapshots"
    ref = repo / "refs" / "main"
    if ref.is_file():
        candidate = snapshots / ref.read_text().strip() / "config.json"
        if candidate.is_file():
            return candidate
    found = sorted(snapshots.glob("*/config.json"), key=lambda p: p.stat().st_mtime, reverse=True) if snapshots.is_dir() else []
    return found[0] if found else None


def offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) set to a true value, as huggingface_hub reads it."""
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def reachable(host: str, timeout_s: float = 3.0) -> bool:
    """Whether a TCP connection to host:443 opens within timeout_s (name resolution included)."""
    import socket  # only when a download is about to be tried
    try:
        socket.create_connection((host, 443), timeout=timeout_s).close()
        return True
    except OSError:
        return False


def config_path(hub_id: str) -> Path:
    """The local path of hub_id's config.json: cached, else downloaded (config.json only) when online. One-line
    AdvisorError naming what was tried when neither works."""
    cache = hf_cache_dir()
    found = cached_config(hub_id, cache)
    if found is not None:
        return found
    tried = f"{hub_id!r} is not in the model catalog nor in the local Hugging Face cache ({cache})"
    if offline():
        raise AdvisorError(f"{tried}, and HF_HUB_OFFLINE is set: download it once online, or pass a config.json path")
    import logging
    from urllib.parse import urlparse
    host = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co").hostname or "huggingface.co"
    if not reachable(host):  # fail in one line now rather than after huggingface_hub's retries
        raise AdvisorError(f"{tried}, and {host} cannot be reached: download it once online, set HF_HUB_OFFLINE=1, "
                           "or pass a config.json path")
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise AdvisorError(f"{tried}, and huggingface_hub is not installed to fetch it: pip install huggingface_hub, "
                           "or pass a config.json path") from None
    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)  # its retry messages would bury the one line
    try:
        return Path(hf_hub_download(hub_id, "config.json"))
    except Exception as exc:  # noqa: BLE001 - any hub failure (not found, gated, no network) is reported in one line
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AdvisorError(f"{tried}, and fetching its config.json from the hub failed: {reason[:200]}") from None
