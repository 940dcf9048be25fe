"""Rightsize runners: LoRA/QLoRA fine-tunes from recipes, measured step by step (owns torch and the ML stack)."""
