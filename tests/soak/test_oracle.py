"""The soak's oracle and journal on planted histories (no processes, no network): a run that
lost nothing passes, and each way of losing a transaction is caught and counted — above all
an acknowledged transaction the node no longer holds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.crypto import AccountKey
from engine.ids import CoValueID, SessionID
from engine.model.transaction import decode_transaction, encode_transaction
from engine.node.facade import LocalNode
from tests.soak.journal import Journal, JournalWriter, ack_record, add_record, read_journal, write_records
from tests.soak.oracle import (
    Replica,
    check_acks,
    check_kept,
    check_soak,
    model_content,
    read_heads,
    read_replica,
    read_sessions,
)

LINE = re.compile(r"soak: (\d+) written, (\d+) acknowledged, (\d+) kills, (\d+) faults, (\d+) lost")


def tokened(label: str, n: int, key: str) -> list[list[Any]]:
    """A soak transaction's changes: its token in the first ``set``."""
    return [["set", key, [label, 1, n, 0]]]


@dataclass
class Story:
    """One client (``a``) that wrote ``n`` transactions into one CoMap, each to its own key,
    journaled; the node acknowledged the first ``acked`` of them."""

    writer: LocalNode
    cid: CoValueID
    sid: SessionID
    records: list[dict[str, Any]]

    @property
    def txs(self) -> list[bytes]:
        return list(self.writer.get(self.cid).sessions[self.sid].txs)

    def journal(self) -> Journal:
        journal = Journal("a")
        for record in self.records:
            add_record(journal, record)
        return journal

    def client(self) -> Replica:
        """The client's own store: everything it wrote."""
        return Replica("a", {self.cid: {self.sid: self.txs}}, {self.cid: self.writer.get_map(self.cid)})

    def node(self, sessions: dict[str, list[bytes]]) -> Replica:
        """A node holding ``sessions`` of the CoMap, with the content they make."""
        entries = []
        for sid, txs in sessions.items():
            for index, raw in enumerate(txs):
                tx = decode_transaction(raw)
                entries.append((tx.made_at, sid, index, tx.changes))
        return Replica("node", {self.cid: sessions}, {self.cid: model_content(entries)})


def story(n: int = 6, acked: int = 4, journaled: int | None = None) -> Story:
    writer = LocalNode(AccountKey.generate())
    cid = writer.create_map(None).id
    sid = writer.session
    for i in range(n):
        writer.write_changes(cid, tokened("a", i, f"k{i}"))  # no loop: each write is its own batch
    log = writer.get(cid).sessions[sid]
    records: list[dict[str, Any]] = [{"life": 1, "pid": 1, "session": sid}]
    records += write_records(cid, sid, 0, log.txs[: n if journaled is None else journaled])
    if acked:
        records.append(ack_record(cid, sid, acked, log.hash_at(acked)))
    return Story(writer, cid, sid, records)


def verdict_of(s: Story, node: Replica, *, client: Replica | None = None) -> Any:
    return check_soak({"a": s.journal()}, node, {"a": client or s.client()}, kills=3, faults=7)


def kinds(verdict: Any) -> set[str]:
    return {p.kind for p in verdict.problems}


def test_a_run_that_lost_nothing_passes() -> None:
    s = story()
    verdict = verdict_of(s, s.node({s.sid: s.txs}))
    assert verdict.problems == []
    assert verdict.line == "soak: 6 written, 4 acknowledged, 3 kills, 7 faults, 0 lost"
    assert LINE.fullmatch(verdict.line)


def test_a_planted_loss_of_an_acknowledged_transaction_fails_the_soak() -> None:
    """The node lost the last acknowledged transaction (and everything after it)."""
    s = story(n=6, acked=4)
    verdict = verdict_of(s, s.node({s.sid: s.txs[:3]}))
    assert verdict.lost == 3  # transactions 3, 4 and 5
    assert verdict.line.endswith(", 3 lost")
    assert {"missing", "ack_broken", "diverged"} <= kinds(verdict)
    broken = [p for p in verdict.problems if p.kind == "ack_broken"]
    assert [sorted(p.tokens) for p in broken] == [[("a", 1, 3)]]
    # The same check runs on a dead node's store at each node kill.
    assert [p.tokens for p in check_acks([s.journal()], s.node({s.sid: s.txs[:3]}))] == [frozenset({("a", 1, 3)})]
    assert check_acks([s.journal()], s.node({s.sid: s.txs[:4]})) == []


def test_an_acknowledgement_of_another_history_is_broken() -> None:
    """Same count, other transactions: the chain hash at the acknowledged count differs."""
    s = story(n=2, acked=2)
    other = encode_transaction(decode_transaction(s.txs[1]).made_at, tokened("a", 1, "k7"))
    node = s.node({s.sid: [s.txs[0], other]})
    verdict = verdict_of(s, node)
    assert "ack_broken" in kinds(verdict)
    assert verdict.lost == 1


def test_an_unacknowledged_loss_counts_too() -> None:
    s = story(n=6, acked=0)
    verdict = verdict_of(s, s.node({s.sid: s.txs[:5]}))
    assert verdict.lost == 1
    assert "missing" in kinds(verdict)
    assert "ack_broken" not in kinds(verdict)


def test_a_durable_transaction_its_journal_missed_is_still_checked() -> None:
    """Killed between the commit and the journal record: the client's store names it."""
    s = story(n=6, acked=0, journaled=5)
    assert verdict_of(s, s.node({s.sid: s.txs})).line == "soak: 6 written, 0 acknowledged, 3 kills, 7 faults, 0 lost"
    verdict = verdict_of(s, s.node({s.sid: s.txs[:5]}))
    assert verdict.written == 6
    assert verdict.lost == 1


def test_moved_into_a_conflict_session_is_kept_unless_acknowledged() -> None:
    s = story(n=6, acked=4)
    moved = s.node({s.sid: s.txs[:5], f"{s.sid}!": [s.txs[5]]})
    client = Replica("a", moved.sessions, moved.content)
    assert verdict_of(s, moved, client=client).problems == []
    moved_acked = s.node({s.sid: s.txs[:3], f"{s.sid}!": s.txs[3:]})
    verdict = verdict_of(s, moved_acked, client=Replica("a", moved_acked.sessions, moved_acked.content))
    assert {"ack_moved", "ack_broken"} <= kinds(verdict)
    assert verdict.lost == 1  # transaction 3: acknowledged, then moved; 4 and 5 were not acknowledged


def test_duplicated_altered_and_misplaced_transactions_are_lost() -> None:
    s = story(n=6, acked=0)
    twice = s.node({s.sid: s.txs, f"{s.sid}!": [s.txs[5]]})
    assert "duplicated" in kinds(verdict_of(s, twice))
    assert verdict_of(s, twice).lost == 1
    tx = decode_transaction(s.txs[5])
    later = encode_transaction(tx.made_at + 1, tx.changes)
    altered = s.node({s.sid: s.txs[:5], f"{s.sid}!": [later]})
    assert "altered" in kinds(verdict_of(s, altered))
    assert verdict_of(s, altered).lost == 1
    elsewhere = s.node({s.sid: s.txs[:5], "acc_zSomeoneElse_session_zX": [s.txs[5]]})
    assert "misplaced" in kinds(verdict_of(s, elsewhere))
    assert verdict_of(s, elsewhere).lost == 1


def test_a_phantom_or_a_disagreeing_client_fails_without_a_loss() -> None:
    s = story(n=3, acked=3)
    stranger = encode_transaction(1, tokened("nobody", 0, "k9"))
    node = s.node({s.sid: s.txs, "acc_zStranger_session_zY": [stranger]})
    verdict = verdict_of(s, node, client=Replica("a", node.sessions, node.content))
    assert kinds(verdict) == {"phantom", "content"}  # the model holds only what was written
    assert verdict.lost == 0
    node = s.node({s.sid: s.txs})
    wrong = Replica("a", node.sessions, {s.cid: {"k0": "something else"}})
    verdict = verdict_of(s, node, client=wrong)
    assert kinds(verdict) == {"content"}
    assert verdict.lost == 0


def test_check_kept_finds_a_durable_transaction_a_client_store_lost() -> None:
    s = story(n=4, acked=0)
    assert check_kept(s.journal(), s.client()) == []
    shorter = Replica("a", {s.cid: {s.sid: s.txs[:3]}}, {})
    [problem] = check_kept(s.journal(), shorter)
    assert problem.kind == "lost_locally"
    assert problem.tokens == {("a", 1, 3)}


def test_the_model_is_last_writer_wins_by_made_at_session_index() -> None:
    entries: list[tuple[int, str, int, list[list[Any]]]] = [
        (5, "s2", 0, [["set", "x", 1]]),
        (5, "s1", 1, [["set", "x", 2], ["set", "y", 1]]),
        (4, "s3", 0, [["set", "x", 3], ["set", "z", 1]]),
        (6, "s1", 2, [["del", "z"]]),
    ]
    assert model_content(entries) == {"x": 1, "y": 1}


def test_the_journal_survives_a_torn_record(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    writer = JournalWriter(path)
    writer.append([{"life": 1, "pid": 1, "session": "s1"}, {"w": "c", "s": "s1", "i": 0, "t": 1, "c": [["del", "k"]]}])
    writer.close()
    with path.open("ab") as torn:
        torn.write(b'{"w":"c","s":"s1","i":1,"t":2,"c":[["se')  # killed mid-append
    assert read_journal(path, "a").torn == 1
    writer = JournalWriter(path)  # the next life ends the torn line first
    writer.append([{"life": 2, "pid": 2, "session": "s2"}])
    writer.close()
    journal = read_journal(path, "a")
    assert (journal.lives, journal.sessions, len(journal.writes), journal.torn) == (2, ["s1", "s2"], 1, 1)


def test_the_readers_read_a_store_without_writing_it(tmp_path: Path) -> None:
    account = AccountKey.generate()
    with LocalNode.open(tmp_path / "store", account) as writer:
        group = writer.create_group()
        cid = writer.create_map(group.id).id
        writer.write_changes(cid, tokened("a", 0, "k0"))
        sid = writer.session
    db = next((tmp_path / "store").glob("*.db"))
    before = db.read_bytes()
    replica = read_replica("a", tmp_path / "store", [cid])
    assert replica.content == {cid: {"k0": ["a", 1, 0, 0]}}
    assert list(replica.sessions[cid]) == [sid] and len(replica.sessions[cid][sid]) == 1
    assert read_sessions("a", tmp_path / "store", [cid], lambda s: s == sid).sessions == replica.sessions
    assert read_sessions("a", tmp_path / "store", [cid], lambda s: False).sessions == {cid: {}}
    heads = read_heads(tmp_path / "store", [cid])
    assert list(heads[cid]) == [sid] and heads[cid][sid][0] == 1
    assert db.read_bytes() == before
    assert all(wal.stat().st_size == 0 for wal in db.parent.glob("*.db-wal"))
