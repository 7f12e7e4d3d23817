"""docs/protocol.md's test vectors are what the engine computes, byte for byte."""

from __future__ import annotations

import re
from pathlib import Path

from engine.crypto import AccountKey, chain_base, chain_extend, signed_message
from engine.ids import new_session_id
from engine.model.header import GroupRuleset, Header
from engine.model.transaction import encode_transaction

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


def _vectors() -> dict[str, str]:
    """The vector block as name -> value, continuation lines joined."""
    text = DOC.read_text(encoding="utf-8")
    block = text.split("**Test vectors.**", 1)[1].split("```", 2)[1]
    out: dict[str, str] = {}
    name = ""
    for line in block.splitlines():
        m = re.match(r"^(\S.*?)\s{2,}(\S.*)$", line)
        if m:
            name = m.group(1)
            out[name] = m.group(2).strip()
        elif line.strip() and name:
            out[name] += " " + line.strip()
    return out


def _hex(value: str) -> bytes:
    return bytes.fromhex(value.replace(" ", ""))


def test_the_documented_vectors_are_what_the_engine_computes() -> None:
    doc = _vectors()
    key = AccountKey.from_seed(bytes(range(32)))
    session = new_session_id(key.account_id, lambda n: bytes(range(1, n + 1)))
    header = Header("group", GroupRuleset(key.account_id), None, "vector", 1767225600000)
    covalue = header.covalue_id()
    tx1 = encode_transaction(1767225600000, [["role", key.account_id, "admin"]])
    tx2 = encode_transaction(1767225601000, [["set", "name", "kintsugi"]])
    h0 = chain_base(covalue, session)
    h1, h2 = chain_extend(h0, [tx1, tx2])
    sig = key.sign(signed_message(covalue, session, 2, h2))

    assert doc["AccountID"] == key.account_id
    assert doc["SessionID"] == session
    assert _hex(doc["header CBOR"]) == header.encode()
    assert doc["CoValueID"] == covalue
    assert _hex(doc["tx 1"].split("]]}", 1)[1]) == tx1
    assert _hex(doc["tx 2"].split("]]}", 1)[1]) == tx2
    assert _hex(doc["h(0)"]) == h0
    assert _hex(doc["h(1)"]) == h1
    assert _hex(doc["h(2)"]) == h2
    assert _hex(doc["sig at n=2"]) == sig
