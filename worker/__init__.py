"""Celery workers: take job ids off the `cpu`/`gpu` queues and train each job in a fresh process.

The Celery process (`worker.celery_app`, `worker.supervisor`) never imports JAX; each job
trains in a spawned child (`worker.train_process` → `worker.runner`), so a crash, an
out-of-memory or a hard cancel frees the device and cannot take the worker down.
"""
