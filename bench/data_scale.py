"""Data at scale: what preparing and opening the recipe's data costs as it grows (issue 28).

For each size (tokens of the byte tokenizer: 1 token per byte of text, plus bos/eos per document), on a synthetic
text corpus (bench.common.synthetic_corpus):
- **build**: runners.prepare.build_dataset into an empty cache, in its own process: wall seconds of the call (no
  imports), peak RSS of the process, with 1 process (pinned to one core with taskset, and unpinned: the fast
  tokenizer's own threads then use the second core) and with 2 render processes. Interleaved (1 pinned, 1, 2, ...)
  `--pairs` times; medians and the spread of the per-pair ratios.
- **cache hit**: the same call on the prepared cache (a new process): seconds and peak RSS.
- **training start**: `advisor run` of a 2-step tiny LoRA on the prepared data, on 1 and 2 ranks (torchrun, gloo):
  the report's setup seconds (tokenizer, data, model) and its peak RSS (the largest of the ranks).

    python bench/data_scale.py --sizes 1e6,1e7,1e8 --pairs 3 --largest-pairs 2 --out bench/results/data_scale_cpu.json

Then `advisor estimate RECIPE`'s preparation time and cache size (its data probe, measured afresh 3 times) against
those builds (also run at the end of a full run):

    python bench/data_scale.py --estimates-only --out bench/results/data_scale_cpu.json

The projection to 2e9 tokens is arithmetic on the measured rates and bytes, labelled as such."""

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# bench.common.synthetic_corpus documents of 20-250 words: ~900 bytes (= byte tokens) each, below data.seq_len (the
# runner cuts a longer document at seq_len, so tokens would stop following the file's size)
WORDS_PER_DOC = (20, 250)
BYTES_PER_DOC = 900
RECIPE = """name: scale
model:
  arch: {{model_type: llama, hidden_size: 128, intermediate_size: 256, num_hidden_layers: 2, num_attention_heads: 4,
         num_key_value_heads: 2, vocab_size: 259, max_position_embeddings: 2048}}
lora: {{r: 8, alpha: 16, targets: all-linear}}
data: {{path: {data}, format: text, seq_len: 2048, val_fraction: 0.001}}
train: {{max_steps: 2, micro_batch: 2, lr: 1.0e-3, eval_every: 1000, seed: 0}}
"""


def _child(recipe: str, cache: str, processes: int) -> None:
    """In a fresh process: build_dataset once, timed without the imports; JSON on stdout."""
    import resource

    from advisor.plan.recipe import load_recipe
    from runners.prepare import build_dataset
    from runners.tokenizer import load_tokenizer
    loaded = load_recipe(recipe)
    tok = load_tokenizer(loaded)
    start = time.perf_counter()
    data = build_dataset(loaded, tok, Path(cache), processes)
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "cache_hit": data.cache_hit, "train_tokens": data.train_tokens,
                      "tokens": data.index["train_tokens"] + data.index["val_tokens"], "bytes": data.index["bytes"],
                      "rows": data.index["train_rows"], "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def _build(recipe: Path, cache: Path, processes: int, pin: bool) -> dict:
    command = [sys.executable, __file__, "--child", str(recipe), str(cache), str(processes)]
    if pin:
        command = ["taskset", "-c", "0"] + command
    out = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if out.returncode != 0:
        raise SystemExit(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def _train(recipe: Path, cache: Path, out: Path, ranks: int) -> dict:
    command = [str(ROOT / ".venv" / "bin" / "advisor"), "run", str(recipe), "--out", str(out), "--overwrite"]
    if ranks > 1:
        command += ["--nproc-per-node", str(ranks), "--set", "launch.backend=gloo"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RIGHTSIZE_CACHE_DIR": str(cache)}
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(done.stderr[-2000:])
    report = json.loads((out / "report.json").read_text())
    return {"ranks": ranks, "wall_seconds": wall, "setup_seconds": report["setup_seconds"],
            "peak_rss_gib_max_rank": report["peak_memory_gib"]["rss"], "prepared_in_run": "prepared " in done.stderr}


def _ratio_summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def measure(size: float, pairs: int, work: Path) -> dict:
    from bench.common import synthetic_corpus
    folder = work / f"{size:.0e}"
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "data.jsonl"
    docs = max(1, round(size / BYTES_PER_DOC))
    if not data.exists():
        synthetic_corpus(data, docs, WORDS_PER_DOC)
    recipe = folder / "recipe.yaml"
    recipe.write_text(RECIPE.format(data=data))
    builds: dict[str, list[dict]] = {"1 process, 1 core": [], "1 process": [], "2 processes": []}
    for _ in range(pairs):
        for name, processes, pin in (("1 process, 1 core", 1, True), ("1 process", 1, False), ("2 processes", 2, False)):
            cache = folder / "cache-build"
            shutil.rmtree(cache, ignore_errors=True)
            builds[name].append(_build(recipe, cache, processes, pin))
    hit = _build(recipe, folder / "cache-build", 1, False)  # the last build's cache, opened by a new process
    assert hit["cache_hit"]
    starts = [_train(recipe, folder / "cache-build", folder / f"run{ranks}", ranks) for ranks in (1, 2)]
    tokens = builds["2 processes"][0]["tokens"]
    median = lambda name: statistics.median(b["seconds"] for b in builds[name])  # noqa: E731
    return {
        "size": size, "documents": docs, "file_bytes": data.stat().st_size, "tokens": tokens,
        "cache_bytes": builds["2 processes"][0]["bytes"], "training_rows": builds["2 processes"][0]["rows"],
        "build": {name: {"seconds": [b["seconds"] for b in runs], "median_seconds": median(name),
                         "tokens_per_second": tokens / median(name),
                         "peak_rss_mib": [b["peak_rss_mib"] for b in runs]} for name, runs in builds.items()},
        "speedup_2_over_1_core": _ratio_summary([a["seconds"] / b["seconds"] for a, b in
                                                 zip(builds["1 process, 1 core"], builds["2 processes"])]),
        "speedup_2_over_1_unpinned": _ratio_summary([a["seconds"] / b["seconds"] for a, b in
                                                     zip(builds["1 process"], builds["2 processes"])]),
        "cache_hit": {"seconds": hit["seconds"], "peak_rss_mib": hit["peak_rss_mib"],
                      "share_of_build": hit["seconds"] / median("2 processes")},
        "training_start": starts,
    }


def estimate_vs_measured(results: list[dict], work: Path, repeats: int = 3) -> list[dict]:
    """`advisor estimate RECIPE` (its data probe, a fresh probe cache each time) against the measured builds: the
    estimate's preparation seconds (2 processes above 20,000 rows, else 1) and cache bytes."""
    out = []
    for r in results:
        folder = work / f"{r['size']:.0e}"
        estimates = []
        for i in range(repeats):
            env = {**os.environ, "HF_HUB_OFFLINE": "1", "RIGHTSIZE_CACHE_DIR": str(folder / f"probe-cache-{i}")}
            env.pop("RIGHTSIZE_DATA_PROBE", None)
            shutil.rmtree(folder / f"probe-cache-{i}", ignore_errors=True)
            done = subprocess.run([str(ROOT / ".venv" / "bin" / "advisor"), "estimate", str(folder / "recipe.yaml"),
                                   "--gpu", "A100-80GB", "--json"], capture_output=True, text=True, cwd=ROOT, env=env, check=True)
            estimates.append(json.loads(done.stdout))
        processes = estimates[0]["data_preparation_processes"]
        measured = r["build"]["2 processes" if processes > 1 else "1 process"]["median_seconds"]
        seconds = [e["data_preparation_seconds"] for e in estimates]
        out.append({"tokens": r["tokens"], "processes": processes, "estimated_seconds": seconds,
                    "measured_median_seconds": measured,
                    "ratio_estimated_over_measured": [x / measured for x in seconds],
                    "estimated_cache_bytes": estimates[0]["data_cache_bytes"], "measured_cache_bytes": r["cache_bytes"],
                    "estimated_tokens": estimates[0]["data_tokens"], "measured_tokens": r["tokens"]})
    return out


def projection(results: list[dict], tokens: float = 2e9) -> dict:
    """Arithmetic, not a measurement: the largest size's measured rate and bytes per token, scaled."""
    top = results[-1]
    rate = top["build"]["2 processes"]["tokens_per_second"]
    return {"tokens": tokens, "basis": f"measured at {top['tokens']:.3g} tokens on this machine",
            "build_minutes_2_processes": tokens / rate / 60, "cache_gb": top["cache_bytes"] / top["tokens"] * tokens / 1e9}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1e6,1e7,1e8")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--largest-pairs", type=int, help="repeats at the largest size (default --pairs)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/rightsize-data-scale"))
    parser.add_argument("--out", type=Path)
    parser.add_argument("--estimates-only", action="store_true",
                        help="add the estimate-against-measured comparison to an existing --out (its --work kept)")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    if args.estimates_only:
        saved = json.loads(args.out.read_text())
        saved["estimate_vs_measured"] = estimate_vs_measured(saved["results"], args.work)
        saved["estimate_command"] = "python bench/data_scale.py " + " ".join(sys.argv[1:])
        args.out.write_text(json.dumps(saved, indent=1) + "\n")
        for e in saved["estimate_vs_measured"]:
            print(f"{e['tokens']:.3g} tokens: estimated {', '.join(f'{x:.1f}' for x in e['estimated_seconds'])} s on "
                  f"{e['processes']} process(es), measured {e['measured_median_seconds']:.1f} s; cache "
                  f"{e['estimated_cache_bytes'] / 1e6:.1f} MB estimated, {e['measured_cache_bytes'] / 1e6:.1f} MB measured")
        return
    results = []
    sizes = [float(s) for s in args.sizes.split(",")]
    for size in sizes:
        results.append(measure(size, args.largest_pairs or args.pairs if size == max(sizes) else args.pairs, args.work))
        r = results[-1]
        print(f"{r['tokens']:.3g} tokens: build 1 core {r['build']['1 process, 1 core']['median_seconds']:.1f} s, "
              f"1 process {r['build']['1 process']['median_seconds']:.1f} s, 2 processes "
              f"{r['build']['2 processes']['median_seconds']:.1f} s (x{r['speedup_2_over_1_core']['median']:.2f} over 1 core); "
              f"cache hit {r['cache_hit']['seconds']:.2f} s; start "
              + ", ".join(f"{s['ranks']} rank(s) setup {s['setup_seconds']:.1f} s, peak RSS {s['peak_rss_gib_max_rank']:.3f} GiB"
                          for s in r["training_start"]), flush=True)
    out = {"command": "python bench/data_scale.py " + " ".join(sys.argv[1:]),
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": f"{os.cpu_count()} cores, {platform.machine()}",
           "results": results, "projection_2e9": projection(results),
           "estimate_vs_measured": estimate_vs_measured(results, args.work)}
    if args.out:
        args.out.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
