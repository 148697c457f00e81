"""Backprop's REST API: FastAPI routes over the database, queueing jobs for the workers."""
