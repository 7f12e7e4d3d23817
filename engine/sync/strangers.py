"""Writes the rules make invalid on arrival, and the quota that bounds them (docs/protocol.md
"Limits", issue 12 point 4).

Content is self-verifying, so a node keeps a signed transaction even when its author has no
role that lets it write there (it stays out of content, flagged invalid): a role change that
makes it valid may arrive later, since a group's history reaches a node in any order, and
dropping it would make replicas disagree once it does. But anyone who knows a CoValue's id
can write such transactions, so a node keeps at most
:data:`~engine.protocol.limits.MAX_INVALID_TRANSACTIONS_PER_ACCOUNT` of them per sending
account (counted in memory, per node process); a chunk that would go over is refused whole
with :class:`~engine.errors.InvalidQuotaExceeded` and nothing of it is stored.

"Invalid on arrival" is judged against the roles this replica holds when the chunk arrives:
its author is not a writer or admin of the owner group (or that group is not here yet), not
an admin of a group it changes, and the first writer of a new group is only its initial
admin. Upstream and admin peers (nodes relaying everything) are not counted.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping

from engine.content.group import WRITE_ROLES
from engine.covalue import CoValueCore
from engine.errors import InvalidQuotaExceeded
from engine.ids import AccountID, CoValueID, SessionID, session_account
from engine.model.header import GroupRuleset, Header, OwnedByGroup
from engine.model.session_log import Chunk
from engine.protocol.limits import MAX_INVALID_TRANSACTIONS_PER_ACCOUNT

__all__ = ["InvalidQuota", "may_write"]


def may_write(
    author: AccountID, header: Header, core: CoValueCore | None, resolve: Callable[[CoValueID], CoValueCore | None]
) -> bool:
    """Would a transaction of ``author`` in the CoValue of ``header`` (``core`` when held) be
    valid by the roles this replica holds now? ``resolve`` finds the owner group."""
    ruleset = header.ruleset
    if isinstance(ruleset, OwnedByGroup):
        group = resolve(ruleset.group)
        return group is not None and not group.deleted and group.group().roles.get(author) in WRITE_ROLES
    if isinstance(ruleset, GroupRuleset):
        if core is None or not core.sessions:
            return author == ruleset.initial_admin
        return core.group().roles.get(author) == "admin"
    return True


class InvalidQuota:
    """Per-account counts of transactions kept though invalid on arrival, and their limit."""

    def __init__(self, limit: int = MAX_INVALID_TRANSACTIONS_PER_ACCOUNT) -> None:
        self.limit = limit
        #: transactions kept so far, by the account that sent them
        self.used: Counter[AccountID] = Counter()

    def admit(
        self,
        sender: AccountID,
        header: Header,
        core: CoValueCore | None,
        new: Mapping[SessionID, Chunk],
        resolve: Callable[[CoValueID], CoValueCore | None],
    ) -> tuple[dict[SessionID, Chunk], list[InvalidQuotaExceeded]]:
        """Split ``new`` into the chunks to apply and the errors of those refused.

        A chunk whose author may write passes free. Any other is charged its transactions
        (duplicates too: the count bounds work as well as storage) if that stays within the
        limit, else refused whole.
        """
        kept: dict[SessionID, Chunk] = {}
        refused: list[InvalidQuotaExceeded] = []
        for sid, chunk in new.items():
            if may_write(session_account(sid), header, core, resolve):
                kept[sid] = chunk
                continue
            if self.used[sender] + len(chunk.txs) > self.limit:
                refused.append(
                    InvalidQuotaExceeded(
                        f"{sid}: this node keeps at most {self.limit} transactions per account "
                        "whose authors may not write where they were sent"
                    )
                )
                continue
            self.used[sender] += len(chunk.txs)
            kept[sid] = chunk
        return kept, refused
