"""The decision: the situation, its hard constraints, findings, the cost of each option, the choice, reviews and alternatives."""
