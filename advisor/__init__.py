"""Rightsize advisor: decide how to adapt a language model, with numbers and sources (no torch here)."""

__version__ = "0.1.0"
