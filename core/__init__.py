"""Backprop's training engine: JSON spec → JAX model → backpropagation.

A plain library: it imports jax, optax and numpy, never the web or queue stack, so the
worker drives it and the API uses it to validate specs.
"""
