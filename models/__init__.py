"""Flax networks mapping (x, t) to an output, and the wrapper that turns one into a score_fn."""
