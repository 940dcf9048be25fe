"""Serving a model: the bytes one replica holds and the GPU time one request takes.

Formulas only; which precision and which tensor x pipeline layout a plan uses are the policies of
advisor.plan.serving.
"""

import math
from typing import Literal

from advisor.formulas.params import ParamCounts

ServingPrecision = Literal["bf16", "fp8", "int4"]

# Bytes per weight that serving quantises. The decoder's linear weights and routed experts are quantised; the
# embedding, the LM head and the norms stay 16-bit (as the FP8 and AWQ/GPTQ checkpoints vLLM serves keep them).
# - bf16: 2 bytes.
# - fp8 (E4M3) with a scale per channel or tensor: 1 byte (vLLM docs, FP8 W8A8: "a 2x reduction in model memory").
# - int4 weight-only (AWQ, Lin et al. 2024; GPTQ, Frantar et al. 2023) with a 16-bit scale and a 4-bit zero point
#   per group of 128 weights: 4 + 20/128 bits, rounded up to 4.25 bits.
SERVING_WEIGHT_BYTES: dict[str, float] = {"bf16": 2.0, "fp8": 1.0, "int4": 4.25 / 8}
UNQUANTISED_BYTES = 2.0

# A served replica holds its weights plus this share of the model's bf16 size for the KV cache, activations and the
# engine's workspace (an assumption, stated in every recommendation: the KV cache a batch needs depends on the
# concurrency and context you serve, which recommend does not ask).
SERVING_KV_CACHE_SHARE = 0.20

# Serving efficiency: the fraction of dense peak an inference server sustains on 2N FLOPs per token. Prompt tokens
# (prefill) run as large matmuls, like a training forward pass; generated tokens (decode) are memory-bound, and
# continuous batching (Kwon et al. 2023, vLLM) lifts decode to the order of 10% of peak. Both are assumptions, stated
# in every recommendation; quantised weights are assumed to serve no faster than bf16 (vLLM reports "up to 1.6x" for
# FP8, which this does not count).
PREFILL_EFFICIENCY = 0.40
DECODE_EFFICIENCY = 0.10

# Inference FLOPs per active parameter per token: a forward pass, 2N (Kaplan et al. 2020 §2.1).
FLOPS_PER_ACTIVE_PARAM_TOKEN = 2.0


def replica_gib(counts: ParamCounts, precision: ServingPrecision) -> float:
    """GiB one replica of the model holds in `precision`: quantised linear weights and experts
    (SERVING_WEIGHT_BYTES), the rest 16-bit, plus SERVING_KV_CACHE_SHARE of its bf16 size."""
    quantised = counts.linear_weights + counts.experts
    weights = quantised * SERVING_WEIGHT_BYTES[precision] + (counts.total - quantised) * UNQUANTISED_BYTES
    return (weights + SERVING_KV_CACHE_SHARE * UNQUANTISED_BYTES * counts.total) / 2**30


def gpu_seconds_per_request(active_params: float, tokens_per_request: float, output_fraction: float,
                            peak_flops: float) -> float:
    """GPU-seconds one request takes: 2 x active parameters per token (FLOPS_PER_ACTIVE_PARAM_TOKEN; a MoE runs its
    active experts only), prompt tokens at PREFILL_EFFICIENCY and output tokens at DECODE_EFFICIENCY of the dense
    peak."""
    flops = FLOPS_PER_ACTIVE_PARAM_TOKEN * active_params * tokens_per_request
    return flops / peak_flops * ((1 - output_fraction) / PREFILL_EFFICIENCY + output_fraction / DECODE_EFFICIENCY)


def replicas_needed(requests_per_day: float, peak_to_average: float, gpu_days_per_request: float,
                    gpus_per_replica: int) -> int:
    """Whole replicas that serve the peak rate (the day's average x peak_to_average): GPU-days of work per day at
    the peak over the replica's GPUs, rounded up; at least one."""
    return max(1, math.ceil(requests_per_day * peak_to_average * gpu_days_per_request / gpus_per_replica))
