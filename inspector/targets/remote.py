"""A remote node over ``ws://`` with the operator's key: needs the sync layer.

The shape is fixed already so the connect dialog and the models need no change when it
arrives: :meth:`RemoteTarget.open` will connect with ``engine.net``, authenticate with the
key (``hello`` signed over the node's nonce), and fill summaries from the node's admin API;
it will be ``live`` and add the ``forked`` badge and the peers view. Today it checks the key
file (so that failure is reported as it will be) and then says what is missing.
"""

from __future__ import annotations

from collections.abc import Callable

from engine.crypto import AccountKey
from engine.diagnostics.covalue_summary import ContentSnapshot
from engine.diagnostics.kv_slots import SlotRow
from engine.diagnostics.session_rows import SessionSource
from engine.ids import CoValueID, SessionID
from engine.kv.store import CASRecord
from inspector.targets.base import Target, TargetUnavailable

__all__ = ["RemoteTarget"]

NEEDS_SYNC_LAYER = "needs_sync_layer"


class RemoteTarget(Target):
    live = True

    async def open(self) -> None:
        if not self.spec.key_file:
            raise TargetUnavailable("key_file", "connecting to a node needs your account key file (--key FILE)")
        AccountKey.load(self.spec.key_file)
        raise TargetUnavailable(
            NEEDS_SYNC_LAYER,
            f"connecting to {self.spec.location} needs the sync layer, which is not built yet; "
            "open a store file or the embedded demo instead",
        )

    async def close(self) -> None:
        return None

    async def analyse(self, on_batch: Callable[[list[CoValueID]], None]) -> None:
        return None

    async def content(self, covalue: CoValueID) -> ContentSnapshot | None:
        return None

    def open_session(self, covalue: CoValueID, session: SessionID) -> SessionSource | None:
        return None

    def kv_namespaces(self) -> list[str]:
        return []

    def kv_slots(self, namespace: str) -> list[SlotRow]:
        return []

    def kv_history(self, namespace: str, key: str) -> list[CASRecord]:
        return []
