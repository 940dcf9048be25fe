"""What every runner entry point (a run, `generate`, `chat`) shares about its process: where caches live, and quiet
libraries."""

import logging
import os
from pathlib import Path


def cache_root() -> Path:
    """Tokenized data and random-init checkpoints: $RIGHTSIZE_CACHE_DIR or ~/.cache/rightsize."""
    return Path(os.environ.get("RIGHTSIZE_CACHE_DIR") or Path.home() / ".cache" / "rightsize")


def quiet_libraries() -> None:
    """Keep the run's output to what the user needs: no dataset progress bars or optional-kernel chatter."""
    import warnings
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    try:
        import datasets
        datasets.disable_progress_bars()
        datasets.logging.set_verbosity_error()
    except ImportError:
        pass
    import transformers
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
