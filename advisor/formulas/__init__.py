"""Formulas: what a setup costs in parameters, FLOPs, memory, time and loss; pure functions, each with its source."""
