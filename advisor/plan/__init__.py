"""Plans: the policies that turn a setup into a runnable plan (sharding, checkpointing, GPU count), the recipe schema and the Estimate."""
