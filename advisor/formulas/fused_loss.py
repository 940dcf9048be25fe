"""The fused LM head + cross-entropy (runners.loss): where the runner uses it and how many positions a chunk holds.

Policies, not formulas: the memory model (advisor.formulas.memory.logits_bytes) and the runner both read them from here.
"""

from advisor.catalog.types import ModelArch
from advisor.formulas.setup import Method

# The fused head + loss (runners.loss) works through at most this many positions at a time. Its logits then take
# about chunk x V x 6 bytes (0.7 GiB at V = 128k) whatever the micro-batch, and the gradient's matmul (chunk x h output,
# contracted over V) still has 256 output tiles of 128 x 128 at h = 4096 to spread over a GPU's SMs (132 on an H200).
# Liger Kernel's rule, chunk logits no larger than the hidden states (ceil(T / ceil(V / h)) positions, 64 for
# Llama-3.1-8B at 2048 tokens), saves less than 1 GiB more but leaves its matmuls 32 output tiles.
FUSED_LOSS_CHUNK_TOKENS = 1024


def loss_chunk_tokens(tokens: int) -> int:
    """Positions per chunk of the fused LM head + cross-entropy (see FUSED_LOSS_CHUNK_TOKENS)."""
    return max(1, min(tokens, FUSED_LOSS_CHUNK_TOKENS))


# Model types whose causal-LM forward is exactly decoder -> lm_head -> ForCausalLMLoss (no logit scaling or
# soft-capping): the runner fuses their loss (runners.loss), each checked against the stock loss in tests.
FUSED_LOSS_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3")


def fused_loss_applies(arch: ModelArch, method: Method, lora_targets, requested: bool = True) -> bool:
    """Whether the runner computes this setup's loss fused: asked for, a supported model type, and a frozen head
    (not full fine-tuning, no adapter on lm_head)."""
    return requested and method != "full" and arch.model_type in FUSED_LOSS_MODEL_TYPES and "lm_head" not in lora_targets

