"""Targets the inspector can open; :func:`make_target` picks the class for a spec."""

from __future__ import annotations

from inspector.targets.base import (
    NodeInfo,
    Target,
    TargetChange,
    TargetSpec,
    TargetUnavailable,
    describe_error,
)
from inspector.targets.bundle import BundleTarget
from inspector.targets.demo import LiveDemoTarget
from inspector.targets.events import SyncEventRecorder, TimedEvent
from inspector.targets.node import NodeTarget
from inspector.targets.remote import RemoteTarget
from inspector.targets.store import StoreTarget
from inspector.workers import WorkerPool

__all__ = [
    "BundleTarget",
    "LiveDemoTarget",
    "NodeInfo",
    "NodeTarget",
    "RemoteTarget",
    "StoreTarget",
    "SyncEventRecorder",
    "Target",
    "TargetChange",
    "TargetSpec",
    "TargetUnavailable",
    "TimedEvent",
    "describe_error",
    "make_target",
]


def make_target(spec: TargetSpec, pool: WorkerPool) -> Target:
    """An unopened target for ``spec`` whose heavy work runs in ``pool``."""
    if spec.kind == "demo":
        return LiveDemoTarget(spec, pool)
    if spec.kind == "node":
        return RemoteTarget(spec, pool)
    if spec.kind == "bundle":
        return BundleTarget(spec, pool)
    return StoreTarget(spec, pool)
