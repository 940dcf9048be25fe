"""What the benchmark scripts share: synthetic text, whose throughput once packed is that of any text, and a device
sync for timing."""

import json
import random
from pathlib import Path


def synthetic_corpus(path: Path, docs: int, words_per_doc: tuple[int, int] = (100, 600), seed: int = 0) -> None:
    """JSONL documents ({"text": ...}) of random lowercase words, deterministic for a seed."""
    rng = random.Random(seed)
    vocabulary = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9))) for _ in range(5000)]
    with Path(path).open("w") as f:
        for _ in range(docs):
            f.write(json.dumps({"text": " ".join(rng.choice(vocabulary) for _ in range(rng.randint(*words_per_doc)))}) + "\n")


def sync(device) -> None:
    """Wait for the device's queued work, so a timer measures it (a no-op on the CPU, which runs synchronously)."""
    if device.type == "cuda":
        import torch
        torch.cuda.synchronize(device)
