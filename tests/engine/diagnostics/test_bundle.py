"""Diagnostic bundles (engine.diagnostics.bundle*): redaction canary, manifest checksums,
cancellation, raw content, offline verification, fork location, and the demo store round trip
(the same CoValues, sessions, heads, forks, slots and anomalies offline as live)."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import base58
import pytest

from engine.crypto import AccountKey
from engine.demo.scenario import DemoResult
from engine.diagnostics.bundle import BundleInputs, export_bundle, export_steps, target_anomaly_steps
from engine.diagnostics.bundle_format import COVALUES, MANIFEST
from engine.diagnostics.bundle_logs import LogRing
from engine.diagnostics.bundle_read import Bundle
from engine.diagnostics.bundle_verify import check_checksums, inspect_bundle, locate_fork, verify_bundle
from engine.diagnostics.redact import (
    Redaction,
    RedactionPolicy,
    Tokenizer,
    load_or_create_salt,
    redact_arg,
    safe_location,
    salt_id,
)
from engine.diagnostics.report import inspect_store
from engine.errors import BundleError
from engine.kv.envelope import Present
from engine.model.session_log import SessionLog
from engine.node.facade import LocalNode
from engine.storage import open_store
from engine.storage.interface import SessionWrite
from engine.storage.sqlite.store import SQLiteStore
from tests.engine.diagnostics._build import comap, fill, key, session_of, stored, tamper_sig, tamper_tx
from tests.util import run_cli

SEED = hashlib.blake2b(b"canary seed", digest_size=32).digest()
TOKEN = "canary-token-Zq8w3rT5"
CANARY_KEY = "canary-mapkey-Hh4p"
CANARY_VALUE = "canary-value-Ld7x"
CANARY_SLOT = "canary-slot-Vv2m"
CANARY_NAME = "canary-name-Pp6k"
SALT = bytes(range(32))


def redaction(salt: bytes = SALT, *, content: bool = False) -> Redaction:
    return Redaction(RedactionPolicy(include_content=content), Tokenizer(salt))


def export_store(path: Path, out: Path, **kw: Any) -> dict[str, Any]:
    store = open_store(path, readonly=True)
    try:
        result = export_bundle(BundleInputs("store", store.location, store=store, **kw), out, redaction())
    finally:
        store.close()
    assert result is not None and result.path == out
    return result.manifest


def forms(secret: bytes) -> list[bytes]:
    """Every encoding a secret might leave in: raw, hex (both cases), base64, base58."""
    return [
        secret,
        secret.hex().encode(),
        secret.hex().upper().encode(),
        base64.b64encode(secret),
        base64.urlsafe_b64encode(secret).rstrip(b"="),
        base58.b58encode(secret),
    ]


def scan(path: Path, secrets: list[bytes]) -> list[str]:
    """Where any form of any secret appears: in the zip's bytes (compressed as stored) and in
    every member uncompressed."""
    found = []
    blobs = {"<zip file>": path.read_bytes()}
    with zipfile.ZipFile(path) as zf:
        blobs.update({name: zf.read(name) for name in zf.namelist()})
    for where, blob in blobs.items():
        for secret in secrets:
            for form in forms(secret):
                if form in blob:
                    found.append(f"{form[:12]!r}… in {where}")
    return found


@pytest.fixture
def canary_store(tmp_path: Path) -> Path:
    """A store holding planted secrets: its node key file (a private key seed), a token in a
    CAS slot, a map key and value, and a CoValue name."""
    path = tmp_path / "store"
    owner = AccountKey.from_seed(SEED)
    node = LocalNode.open(path, owner)
    group = node.create_group(meta={"name": CANARY_NAME})
    doc = node.create_map(group.id, meta={"name": CANARY_NAME})
    node.set(doc.id, CANARY_KEY, CANARY_VALUE)
    node.set(doc.id, "other", {"nested": CANARY_VALUE})
    node.flush()
    node.kv.cas(owner.account_id, CANARY_SLOT, 0, Present({"token": TOKEN}))
    node.close()
    owner.save(path / "node.key")
    return path


def test_canary_no_secret_leaves_in_any_form(canary_store: Path, tmp_path: Path) -> None:
    """A bundle made by the CLI and one made with this process's log lines (which logged the
    secrets as arguments) hold none of the planted secrets, in no encoding, compressed or
    not; the redaction policy is in the manifest. With raw content, the map's key and value
    are in clear (that is what content means) but the key seed and the token still are not."""
    salt_file = tmp_path / "salt"
    out = tmp_path / "cli.zip"
    run_cli("bundle", "export", str(canary_store), "--out", str(out), "--salt-file", str(salt_file), "--json")
    salt = bytes.fromhex(salt_file.read_text())
    secrets = [
        SEED,
        TOKEN.encode(),
        CANARY_KEY.encode(),
        CANARY_VALUE.encode(),
        CANARY_SLOT.encode(),
        CANARY_NAME.encode(),
        salt,
    ]
    assert scan(out, secrets) == []
    manifest = json.loads(zipfile.ZipFile(out).read(MANIFEST))
    assert manifest["redaction"]["policy"] == "tokens" and manifest["redaction"]["salt_id"] == salt_id(salt)
    assert "private keys" in manifest["redaction"]["never_included"]

    ring = LogRing()
    logger = logging.getLogger("tests.canary")
    logger.addHandler(ring)
    try:
        logger.warning("slot %s holds %s for %s", CANARY_SLOT, TOKEN, 42)
    finally:
        logger.removeHandler(ring)
    logged = tmp_path / "logged.zip"
    export_store(canary_store, logged, logs=ring.lines)
    assert scan(logged, [SEED, TOKEN.encode(), CANARY_KEY.encode(), CANARY_VALUE.encode(), CANARY_SLOT.encode()]) == []
    with Bundle(logged) as bundle:
        (line,) = [entry for entry in bundle.logs() if entry["logger"] == "tests.canary"]
    assert line["message"].startswith("slot tok_") and line["message"].endswith(" for 42")

    raw = tmp_path / "content.zip"
    store = open_store(canary_store, readonly=True)
    export_bundle(BundleInputs("store", store.location, store=store), raw, redaction(content=True))
    store.close()
    assert scan(raw, [SEED, TOKEN.encode(), CANARY_SLOT.encode(), SALT]) == []
    assert scan(raw, [CANARY_KEY.encode()]) != []


def test_redaction_helpers() -> None:
    tok = Tokenizer(SALT)
    assert tok.token("x") == tok.token("x") != Tokenizer(bytes(32)).token("x")
    assert len(tok.token("x")) == len("tok_") + 24 and SALT.hex() not in repr(tok)
    assert redact_arg(5, tok) == 5 and redact_arg("secret", tok).startswith("tok_")
    assert redact_arg("in:3", tok) == "in:3"
    assert safe_location("ws://user:pw@host:9/path?token=abc#f") == "ws://host:9/path"
    assert safe_location("/a/b") == "/a/b"


def test_salt_file_is_created_once_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "salt"
    first = load_or_create_salt(path)
    assert load_or_create_salt(path) == first and path.stat().st_mode & 0o077 == 0
    assert load_or_create_salt(None) != load_or_create_salt(None)


def test_manifest_lists_every_file_with_its_checksum(demo: DemoResult, tmp_path: Path) -> None:
    """Every member but the manifest is listed with its size and SHA-256, and only those;
    changing one member's bytes is caught by ``verify``."""
    out = tmp_path / "demo.zip"
    manifest = export_store(demo.store, out)
    with zipfile.ZipFile(out) as zf:
        names = set(zf.namelist()) - {MANIFEST}
        assert set(manifest["files"]) == names
        for name in names:
            data = zf.read(name)
            assert manifest["files"][name] == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    for field in ("kintsugi", "protocol", "created_at", "target", "scope", "redaction"):
        assert field in manifest
    assert manifest["scope"]["transactions"] == demo.transactions
    assert verify_bundle(out)["ok"]

    tampered = tmp_path / "tampered.zip"
    with zipfile.ZipFile(out) as src, zipfile.ZipFile(tampered, "w") as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename == COVALUES:
                data = data.replace(b'"deleted":true', b'"deleted":false')
            dst.writestr(info, data)
    report = verify_bundle(tampered)
    assert not report["ok"] and [p["file"] for p in report["problems"]] == [COVALUES]


def test_same_salt_cross_references_another_does_not(demo: DemoResult, tmp_path: Path) -> None:
    def keys(path: Path) -> list[str]:
        return [k["key"] for k in inspect_bundle(path)["kv"]]

    a, b = tmp_path / "a.zip", tmp_path / "b.zip"
    export_store(demo.store, a)
    export_store(demo.store, b)
    assert keys(a) == keys(b) and all(k.startswith("tok_") for k in keys(a))
    store = open_store(demo.store, readonly=True)
    other = tmp_path / "other.zip"
    export_bundle(BundleInputs("store", store.location, store=store), other, redaction(bytes(32)))
    store.close()
    assert not set(keys(a)) & set(keys(other))


@pytest.mark.parametrize("where", ["creating", "opening"])
def test_an_export_interrupted_as_its_file_is_made_leaves_none(
    demo: DemoResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """SIGTERM raises KeyboardInterrupt wherever the export is: here just after the call that
    made its temporary file created it (before the name came back), or as the zip opens it."""
    out = tmp_path / "out" / "bundle.zip"
    made = tempfile.mkstemp

    def interrupted_mkstemp(*args: Any, **kwargs: Any) -> tuple[int, str]:
        fd, _name = made(*args, **kwargs)
        os.close(fd)
        raise KeyboardInterrupt

    def interrupted_zip(*args: Any, **kwargs: Any) -> zipfile.ZipFile:
        raise KeyboardInterrupt

    if where == "creating":
        monkeypatch.setattr(tempfile, "mkstemp", interrupted_mkstemp)
    else:
        monkeypatch.setattr(zipfile, "ZipFile", interrupted_zip)
    store = open_store(demo.store, readonly=True)
    try:
        with pytest.raises(KeyboardInterrupt):
            export_bundle(BundleInputs("store", store.location, store=store), out, redaction())
        assert list(out.parent.iterdir()) == []
    finally:
        store.close()


def test_a_cancelled_or_failed_export_leaves_no_file(demo: DemoResult, tmp_path: Path) -> None:
    out = tmp_path / "out" / "bundle.zip"
    store = open_store(demo.store, readonly=True)
    try:
        steps = export_steps(BundleInputs("store", store.location, store=store), out, redaction())
        next(steps)
        next(steps)
        assert [p.name for p in out.parent.iterdir()]  # the partial file exists meanwhile
        steps.close()
        assert list(out.parent.iterdir()) == []

        cancelled = export_bundle(
            BundleInputs("store", store.location, store=store), out, redaction(), cancelled=lambda: True
        )
        assert cancelled is None and list(out.parent.iterdir()) == []

        def broken() -> list[Any]:
            raise OSError("disk on fire")

        with pytest.raises(OSError, match="disk on fire"):
            export_bundle(BundleInputs("store", store.location, store=store, slots=broken), out, redaction())
        assert list(out.parent.iterdir()) == []
    finally:
        store.close()


def test_raw_content_is_read_by_window_and_reverified(tmp_path: Path) -> None:
    """With raw content every chain is re-derived offline; the rows read back are the
    store's; a damaged row member is caught."""
    store, core, log = stored(tmp_path / "store", 2500)
    store.close()
    out = tmp_path / "content.zip"
    src = open_store(tmp_path / "store", readonly=True)
    export_bundle(BundleInputs("store", src.location, store=src), out, redaction(content=True))
    report = verify_bundle(out)
    assert report["ok"] and report["chains_verified"] == 1 and report["checkpoints"] == 25
    with Bundle(out) as bundle:
        source = bundle.session_source(core.id, log.session)
        assert source is not None and source.count == 2500
        assert source.window(1234, 3) == src.session_window(core.id, log.session, 1234, 3)
        assert source.window(2499, 10) == src.session_window(core.id, log.session, 2499, 10)
    src.close()


def test_checkpoint_signatures_verify_offline_without_content(tmp_path: Path) -> None:
    """A recorded checkpoint hash that does not match its signature fails ``verify`` even
    when the manifest was rewritten to match (the signatures are self-certifying)."""
    store, _core, _log = stored(tmp_path / "store", 300)
    store.close()
    out = tmp_path / "b.zip"
    export_store(tmp_path / "store", out)
    forged = tmp_path / "forged.zip"
    with zipfile.ZipFile(out) as src:
        members = {name: src.read(name) for name in src.namelist()}
    record = json.loads(members[COVALUES])
    record["sessions"][0]["checkpoints"][1][1] = "00" * 32
    members[COVALUES] = json.dumps(record).encode() + b"\n"
    manifest = json.loads(members[MANIFEST])
    manifest["files"][COVALUES] = {
        "bytes": len(members[COVALUES]),
        "sha256": hashlib.sha256(members[COVALUES]).hexdigest(),
    }
    members[MANIFEST] = json.dumps(manifest).encode()
    with zipfile.ZipFile(forged, "w") as dst:
        for name, data in members.items():
            dst.writestr(name, data)
    report = verify_bundle(forged)
    assert not report["ok"] and "signature of checkpoint 200" in report["problems"][0]["problem"]


def test_corruption_found_at_export_is_recorded(tmp_path: Path) -> None:
    """A bit-rotted transaction and a forged signature are recorded as the sessions' first
    broken links with their anomalies; the bundle itself verifies."""
    store, core, log = stored(tmp_path / "store", 400)
    other = SessionLog(core.id, session_of(key(2)))
    fill(other, key(2), 300)
    store.write([], [SessionWrite(other, 0, other.signed_count)])
    tamper_tx(store, log.session, 150, b"\xa0")
    tamper_sig(store, other.session, 200)
    store.conn.commit()
    store.close()
    out = tmp_path / "b.zip"
    manifest = export_store(tmp_path / "store", out)
    assert manifest["scope"]["anomalies"] == 2
    with Bundle(out) as bundle:
        kinds = {(a.kind, a.session, a.index) for a in bundle.anomalies()}
        summary = bundle.summaries()[0]
    assert kinds == {("corrupt_chain", log.session, 150), ("signature_failure", other.session, 199)}
    assert {s.id: s.corrupt.code for s in summary.sessions if s.corrupt} == {
        log.session: "broken_chain",
        other.session: "bad_signature",
    }
    report = verify_bundle(out)
    assert report["ok"] and {b["session"] for b in report["recorded_breaks"]} == {log.session, other.session}


def test_two_bundles_locate_a_fork_within_one_batch(tmp_path: Path) -> None:
    """Two copies of a session forked at 537 (checkpoints every 100): their bundles' hashes
    at checkpoints put the fork in (500, 600] — without any content."""
    who = key(1)
    core = comap()
    sid = session_of(who)
    paths = []
    for side in ("a", "b"):
        log = SessionLog(core.id, sid)
        fill(log, who, 537, sign_tail=False)
        fill(log, who, 463, start=10_000 if side == "b" else 537)
        store = SQLiteStore(tmp_path / side)
        store.write([core.header], [SessionWrite(log, 0, log.signed_count)])
        store.close()
        paths.append(tmp_path / f"{side}.zip")
        export_store(tmp_path / side, paths[-1])
    with Bundle(paths[0]) as a, Bundle(paths[1]) as b:
        window = locate_fork(a.checkpoints(core.id, sid), b.checkpoints(core.id, sid))
        same = locate_fork(a.checkpoints(core.id, sid), a.checkpoints(core.id, sid))
    assert (window.after, window.before, window.same) == (500, 600, False)
    assert same.same and same.before is None


def tokenized_kv(rows: list[dict[str, Any]], tok: Tokenizer) -> list[dict[str, Any]]:
    return sorted(({**r, "key": tok.token(r["key"])} for r in rows), key=lambda r: (r["namespace"], r["key"]))


def anomalies_tokenized(rows: list[dict[str, Any]], tok: Tokenizer) -> list[dict[str, Any]]:
    """Live anomalies as a bundle made with ``tok`` records them (CAS keys as tokens)."""
    out = []
    for row in rows:
        token = tok.token(row["key"]) if "key" in row else None
        out.append(
            row if token is None else {**row, "key": token, "subject": row["subject"].replace(row["key"], token)}
        )
    return out


def test_demo_store_round_trip(demo: DemoResult, tmp_path: Path) -> None:
    """Offline, a bundle of the demo store shows the same CoValues, sessions, counts, heads,
    verification and flags as ``inspect`` of the store, the same forks (the recovered
    conflict session), the same CAS slots (keys as the same salt's tokens) and the same
    anomalies as the live rules find."""
    copy = tmp_path / "demo"
    shutil.copytree(demo.store, copy)
    out = tmp_path / "demo.zip"
    export_store(copy, out)
    store = open_store(copy, readonly=True)
    try:
        live = inspect_store(store)
        steps = target_anomaly_steps(BundleInputs("store", store.location, store=store))
        while True:
            try:
                next(steps)
            except StopIteration as stop:
                live_anomalies = [a.to_json() for a in stop.value]
                break
    finally:
        store.close()
    offline = inspect_bundle(out)
    assert offline["covalues"] == live["covalues"]
    tok = Tokenizer(SALT)
    assert offline["kv"] == tokenized_kv(live["kv"], tok)
    assert offline["anomalies"] == anomalies_tokenized(live_anomalies, tok)
    assert {a["kind"] for a in offline["anomalies"]} >= {"fork", "cas_contention"}
    with Bundle(out) as bundle:
        record = bundle.record(demo.maps["notes"])
        assert record is not None
        forks = record["forks"]
        assert [f["conflict_session"] for f in forks] == demo.conflict_sessions
        notes = bundle.content(demo.maps["notes"])
        assert notes is not None and notes.entries and all(k.startswith("tok_") for k in notes.entries)
        tombstone = bundle.tombstones()
        assert [t["covalue"] for t in tombstone if t["valid"]] == demo.deleted


def _not_bundles(tmp_path: Path) -> dict[str, Path]:
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"this is not a zip archive")
    plain = tmp_path / "plain.zip"
    with zipfile.ZipFile(plain, "w") as zf:
        zf.writestr("notes.txt", "a zip, but no manifest")
    return {"not_a_zip": junk, "no_manifest": plain}


def test_every_bad_bundle_is_a_bundle_error(demo: DemoResult, tmp_path: Path) -> None:
    """Not a zip, a zip without a manifest, a member whose checksum does not match: each
    raises BundleError (code invalid_bundle) naming the problem."""
    for problem, path in _not_bundles(tmp_path).items():
        with pytest.raises(BundleError) as caught:
            Bundle(path)
        assert caught.value.code == "invalid_bundle" and caught.value.problem == problem
        assert str(path) in caught.value.detail
    good = tmp_path / "good.zip"
    export_store(demo.store, good)
    assert check_checksums(good) > 0
    tampered = tmp_path / "tampered.zip"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(tampered, "w") as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            dst.writestr(info, data + b" " if info.filename == COVALUES else data)
    with pytest.raises(BundleError) as caught:
        check_checksums(tampered)
    assert caught.value.problem == "checksum" and COVALUES in caught.value.detail
    (problem,) = verify_bundle(tampered)["problems"]
    assert problem["code"] == "invalid_bundle" and problem["file"] == COVALUES


def test_the_cli_on_a_zip_that_is_not_a_bundle(tmp_path: Path) -> None:
    """`inspect`, `verify` and `compare` on a non-bundle .zip: one clear line, exit 1 (2 for
    compare, its error code), no traceback; --json gives the code."""
    for path in _not_bundles(tmp_path).values():
        for command in (["inspect", str(path)], ["verify", str(path)], ["compare", str(path), str(path)]):
            ran = run_cli(*command, check=False)
            assert ran.returncode == (2 if command[0] == "compare" else 1), ran
            assert "not a readable Kintsugi bundle" in ran.stderr and "Traceback" not in ran.stderr
            as_json = run_cli(*command, "--json", check=False)
            assert json.loads(as_json.stdout)["error"]["code"] == "invalid_bundle"
