"""Catalog data at the bottom: GPUs, model architectures and API prices (base types, shipped YAML/JSON, hub configs)."""
