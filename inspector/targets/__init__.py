"""Targets the inspector can open; :func:`make_target` picks the class for a spec."""

from __future__ import annotations

from inspector.targets.base import Target, TargetChange, TargetSpec, TargetUnavailable, describe_error
from inspector.targets.node import DemoTarget, NodeTarget
from inspector.targets.remote import RemoteTarget
from inspector.targets.store import StoreTarget
from inspector.workers import WorkerPool

__all__ = [
    "DemoTarget",
    "NodeTarget",
    "RemoteTarget",
    "StoreTarget",
    "Target",
    "TargetChange",
    "TargetSpec",
    "TargetUnavailable",
    "describe_error",
    "make_target",
]


def make_target(spec: TargetSpec, pool: WorkerPool) -> Target:
    """An unopened target for ``spec`` whose heavy work runs in ``pool``."""
    if spec.kind == "demo":
        return DemoTarget(spec, pool)
    if spec.kind == "node":
        return RemoteTarget(spec, pool)
    return StoreTarget(spec, pool)
