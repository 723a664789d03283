"""Data parallelism: the mini-batch split across devices with ``jax.sharding``.

Parameters and optimizer state are replicated; every mini-batch (and each
evaluation set) is split along its sample axis over a one-axis device mesh,
and XLA partitions the compiled epoch program accordingly (the batch means
become cross-device sums). The numbers equal one device's up to the order of
floating-point sums.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = ["data_mesh", "shard_leading", "replicate"]

AXIS = "data"


def data_mesh(batch_size: int, devices: Sequence[jax.Device] | None = None) -> Mesh | None:
    """A one-axis mesh for splitting mini-batches of ``batch_size``, or ``None`` for one device.

    ``devices=None`` takes the most visible devices that divide ``batch_size``
    evenly; an explicit list must divide it.
    """
    if devices is None:
        visible = jax.devices()
        count = max(d for d in range(1, len(visible) + 1) if batch_size % d == 0)
        devices = visible[:count]
    devices = list(devices)
    if not devices:
        raise ValueError("devices is empty; pass None (all visible devices) or at least one device")
    if batch_size % len(devices):
        raise ValueError(
            f"a mini-batch of {batch_size} does not split evenly across {len(devices)} devices; "
            f"use a batch size that is a multiple of {len(devices)} or fewer devices"
        )
    return Mesh(devices, (AXIS,)) if len(devices) > 1 else None


def shard_leading(tree: Any, mesh: Mesh | None, axis: int = 0) -> Any:
    """Split every leaf of ``tree`` along ``axis`` over ``mesh`` (replicate leaves that do not divide)."""
    if mesh is None:
        return tree
    n = mesh.devices.size

    def put(a):
        if a.ndim > axis and a.shape[axis] % n == 0:
            spec = PartitionSpec(*([None] * axis), AXIS)
        else:
            spec = PartitionSpec()
        return jax.device_put(a, NamedSharding(mesh, spec))

    return jax.tree.map(put, tree)


def replicate(tree: Any, mesh: Mesh | None) -> Any:
    """A full copy of ``tree`` on every device of ``mesh``."""
    if mesh is None:
        return tree
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))
