"""Plausible upper bounds on what a user states (tokens, money, usage, GPUs, prices): far above any real plan, low
enough that an absurd number (1e30 tokens) is refused in one line naming its flag instead of answered with
"needs 2.6e24 GPUs". The records that take these inputs (advisor.decide.situation.Situation, the review's Proposal,
the estimate's TrainingSetup) carry them as `msgspec.Meta(le=...)`, so the engine refuses them too."""

# Tokens of data: ~28x the largest published pretraining corpus (Qwen3, 36T tokens; Yang et al. 2025, Qwen3 report).
MAX_TOKENS = 1e15

# Documents: each holds at least one token, so the token bound bounds them too.
MAX_DOCS = MAX_TOKENS

# Dollars of training budget (or a proposal's cost): 100x the ~$1B frontier runs projected for 2027 (Cottier et al.
# 2024, "The rising costs of training frontier AI models", Epoch AI).
MAX_BUDGET_USD = 1e11

# Production requests per day: ~7x Google's web searches (over 5 trillion a year, ~1.4e10 a day; Google, 2025).
MAX_REQUESTS_PER_DAY = 1e11

# Prompt + completion tokens per request: 10x the longest context window offered (10M tokens, Llama 4 Scout, 2025).
MAX_TOKENS_PER_REQUEST = 1e8

# GPUs of one type: the size of the largest single training clusters reported (100k H100s, xAI Colossus, 2024).
MAX_GPUS = 100_000

# $/GPU-hour: ~50x the dearest GPU in the catalog (under $20/GPU-hour on demand).
MAX_PRICE_USD_PER_GPU_HOUR = 1e3
