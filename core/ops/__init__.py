"""Array ops for the engine's layers with a CPU-specific implementation.

XLA:CPU is slow at exactly the ops a CNN needs inside the engine's `lax.scan` training
loop (2-D convolutions and their gradients, max-pool gradients); these functions keep the
`lax` contract and choose, at trace time, a formulation that XLA:CPU runs well. On other
backends they are the plain `lax` ops.
"""

from core.ops.conv import conv2d
from core.ops.pool import avg_pool2d, global_avg_pool2d, max_pool2d

__all__ = ["avg_pool2d", "conv2d", "global_avg_pool2d", "max_pool2d"]
