"""Measurement beside the decision: run reports, estimated against measured, published GPU rows and their fit."""
