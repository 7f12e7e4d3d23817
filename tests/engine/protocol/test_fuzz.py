"""Fuzzing the wire decoders, and the committed corpus of frames that must be rejected.

Whatever bytes or CBOR values arrive, :func:`decode_frame` and :func:`decode_message` either
return validated messages or raise a :class:`KintsugiError` whose ``code`` is one of the
stable decoder codes (:data:`DECODER_CODES`) — never a bare ``ValueError``, ``TypeError``,
``KeyError``, ``RecursionError``... A message that was accepted can be encoded again, and
that encoding is stable (what a node forwards is what it received).

Each fuzz test runs at least 1,000 examples (more under the ``thorough`` hypothesis profile).
The corpus is ``corpus/*.bin``; its README's table gives the code each file must get.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import codec
from engine.errors import KintsugiError
from engine.protocol.frames import BULK, OP, Frame, decode_frame, encode_frame
from engine.protocol.messages import MESSAGE_TYPES, Message, decode_message
from tests.engine.factories import cbor_values
from tests.engine.protocol.test_messages import MESSAGE_STRATEGIES, messages

FUZZ = settings(
    max_examples=max(1000, settings.default.max_examples),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)

MAX_SIZE = 64 * 1024
MAX_MESSAGES = 64

#: Every code a decoder may raise or report. Codes travel on the wire: a new one is a
#: protocol change and is added here on purpose.
DECODER_CODES = frozenset(
    {
        "invalid_cbor",
        "integer_too_large",
        "malformed_frame",
        "unsupported_version",
        "frame_too_large",
        "invalid_message",
        "unknown_message",
        "invalid_id",
        "invalid_header",
        "invalid_content",
    }
)

CORPUS = Path(__file__).parent / "corpus"
CORPUS_MAX_SIZE = 4096
CORPUS_MAX_MESSAGES = 16


def assert_stable_error(exc: BaseException) -> None:
    assert isinstance(exc, KintsugiError), f"{type(exc).__name__} escaped the decoder: {exc!r}"
    assert isinstance(exc.code, str)
    assert exc.code in DECODER_CODES, f"unexpected error code {exc.code!r} ({type(exc).__name__}: {exc})"


def assert_forwardable(message: Message) -> None:
    """An accepted message encodes again, and that encoding survives another round unchanged."""
    assert type(message) in MESSAGE_TYPES.values()
    try:
        first = codec.encode(message.to_obj())
    except KintsugiError as exc:  # something accepted that cannot be re-encoded must say so typed
        assert_stable_error(exc)
        return
    again = decode_message(codec.decode(first))
    assert codec.encode(again.to_obj()) == first


def check_frame(data: bytes) -> Frame | None:
    """Decode ``data`` as a peer's frame; fail on anything but a clean outcome."""
    try:
        frame = decode_frame(data, max_size=MAX_SIZE, max_messages=MAX_MESSAGES)
    except KintsugiError as exc:
        assert_stable_error(exc)
        return None
    assert frame.kind in (OP, BULK)
    for error in frame.errors:
        assert_stable_error(error)
    for message in frame.messages:
        assert_forwardable(message)
    return frame


def check_message(obj: object) -> None:
    try:
        message = decode_message(obj)
    except KintsugiError as exc:
        assert_stable_error(exc)
        return
    assert_forwardable(message)


def op(msg: object) -> bytes:
    return codec.encode({"v": 1, "k": OP, "msg": msg})


# -- strategies ------------------------------------------------------------------------------


def _head(major: int, n: int) -> bytes:
    if n < 24:
        return bytes([major << 5 | n])
    for info, fmt in ((24, ">B"), (25, ">H"), (26, ">I"), (27, ">Q")):
        if n < 1 << (8 * struct.calcsize(fmt)):
            return bytes([major << 5 | info]) + struct.pack(fmt, n)
    raise ValueError(n)


_TAGS = [0, 1, 2, 3, 4, 5, 24, 25, 28, 29, 30, 32, 35, 36, 37, 258, 55799, 2**32]

_raw_leaves = st.one_of(
    st.integers(0, 2**64 - 1).map(lambda n: _head(0, n)),
    st.integers(0, 2**64 - 1).map(lambda n: _head(1, n)),
    st.integers(0, 255).map(lambda n: b"\x18" + bytes([n])),  # non-shortest below 24
    st.binary(max_size=12).map(lambda b: _head(2, len(b)) + b),
    st.text(max_size=8).map(lambda t: _head(3, len(t.encode())) + t.encode()),
    st.sampled_from(["v", "k", "t", "op", "bulk", "msg", "msgs", "id", "known", "new", "sigs", "txs"]).map(
        lambda t: _head(3, len(t)) + t.encode()
    ),
    st.sampled_from([b"\xf4", b"\xf5", b"\xf6", b"\xf7", b"\xf0", b"\xf8\xff", b"\xf9\x7e\x00", b"\xf9\x7c\x00"]),
    st.floats().map(lambda f: b"\xfb" + struct.pack(">d", f)),
    st.just(b"\x5f\x41a\x41b\xff"),  # indefinite byte string
    st.just(b"\x7f\x61a\xff"),  # indefinite text string
    st.binary(min_size=1, max_size=3),  # noise
)


def _containers(inner: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    items = st.lists(inner, max_size=4)
    return st.one_of(
        items.map(lambda xs: _head(4, len(xs)) + b"".join(xs)),
        items.map(lambda xs: _head(5, len(xs) // 2) + b"".join(xs[: len(xs) // 2 * 2])),
        st.tuples(st.sampled_from(_TAGS), inner).map(lambda t: _head(6, t[0]) + t[1]),
        items.map(lambda xs: b"\x9f" + b"".join(xs) + b"\xff"),
        items.map(lambda xs: b"\xbf" + b"".join(xs[: len(xs) // 2 * 2]) + b"\xff"),
    )


#: Raw CBOR items, including what canonical encoders never write: non-shortest heads, tags
#: (dates, bignums, decimals, regexes, ...), simple values, half floats, indefinite strings
#: and containers, and now and then a few noise bytes.
raw_cbor = st.recursive(_raw_leaves, _containers, max_leaves=12)


@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` after a few bit flips, truncations, insertions, deletions or byte swaps."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        action = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "set"]))
        if not out:
            out.extend(draw(st.binary(min_size=1, max_size=4)))
            continue
        at = draw(st.integers(0, len(out) - 1))
        if action == "flip":
            out[at] ^= 1 << draw(st.integers(0, 7))
        elif action == "truncate":
            del out[at:]
        elif action == "insert":
            out[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif action == "delete":
            del out[at : at + draw(st.integers(1, 8))]
        else:
            out[at] = draw(st.sampled_from([0x00, 0x18, 0x1B, 0x1C, 0x1F, 0x5F, 0x7F, 0x9F, 0xBF, 0xC2, 0xF7, 0xFF]))
    return bytes(out)


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every position inside nested maps and lists (the root excluded)."""
    found: list[tuple[Any, ...]] = []
    children = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for key, value in children:
        found.append((*prefix, key))
        found.extend(_paths(value, (*prefix, key)))
    return found


def _get(obj: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        obj = obj[key]
    return obj


def _replace(obj: Any, path: tuple[Any, ...], value: Any, *, delete: bool = False) -> Any:
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(obj, dict):
        copy: Any = dict(obj)
    else:
        copy = list(obj)
    if delete and not rest:
        del copy[head]
    elif not rest:
        copy[head] = value  # may add a new key to a map
    else:
        copy[head] = _replace(obj[head], rest, value, delete=delete)
    return copy


swap_values = st.one_of(
    cbor_values(allow_nan=True, max_leaves=4),
    st.sampled_from([None, True, False, 0, 1, -1, 2**63, 2**64, 1.0, "", b"", [], {}, "x" * 3000]),
)


@st.composite
def swapped_messages(draw: st.DrawFn) -> dict[str, Any]:
    """A valid message map with one field (at any depth) replaced by another type, deleted,
    or joined by an unexpected key."""
    obj: dict[str, Any] = draw(messages).to_obj()
    paths = _paths(obj)
    action = draw(st.sampled_from(["swap", "swap", "delete", "add"]))
    path = draw(st.sampled_from(paths))
    if action == "add":
        maps = [()] + [p for p in paths if isinstance(_get(obj, p), dict)]
        target = draw(st.sampled_from(maps))
        return _replace(obj, (*target, draw(st.text(max_size=6))), draw(swap_values))
    if action == "delete":
        return _replace(obj, path, None, delete=True)
    return _replace(obj, path, draw(swap_values))


# -- fuzz tests ------------------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=2048))
def test_arbitrary_bytes(data: bytes) -> None:
    """Arbitrary bytes never make decode_frame raise anything but a coded KintsugiError."""
    check_frame(data)


@FUZZ
@given(raw_cbor)
def test_arbitrary_raw_cbor_items(data: bytes) -> None:
    """Odd CBOR (tags, simple values, non-shortest and indefinite forms) as a whole frame, and
    as the message of a valid envelope, is accepted or refused cleanly."""
    check_frame(data)
    check_frame(b"\xa3\x61k\x62op\x61v\x01\x63msg" + data)
    check_frame(b"\xa3\x61k\x64bulk\x61v\x01\x64msgs\x81" + data)


@FUZZ
@given(cbor_values(allow_nan=True))
def test_arbitrary_cbor_values(value: Any) -> None:
    """Arbitrary CBOR values as a frame, as an op message and as a bare message."""
    check_frame(codec.encode(value))
    check_frame(op(value))
    check_message(value)


@FUZZ
@given(st.sampled_from(sorted(MESSAGE_TYPES)), st.data())
def test_typed_messages_with_arbitrary_fields(kind: str, data: st.DataObject) -> None:
    """A known ``t`` with that type's field names holding arbitrary values."""
    example = data.draw(MESSAGE_STRATEGIES[kind]).to_obj()
    obj = {"t": kind}
    for name in example:
        if name != "t" and data.draw(st.booleans()):
            obj[name] = data.draw(swap_values)
        elif name != "t":
            obj[name] = example[name]
    check_message(obj)
    check_frame(op(obj))


@FUZZ
@given(swapped_messages())
def test_type_swaps_in_valid_messages(obj: dict[str, Any]) -> None:
    """A valid message with one field, at any depth, swapped for another type, deleted or
    joined by an unexpected key decodes cleanly or is refused with a coded error."""
    check_message(obj)
    check_frame(op(obj))


@FUZZ
@given(st.data())
def test_mutated_valid_frames(data: st.DataObject) -> None:
    """Bit flips, truncations, insertions and deletions in valid op and bulk frames."""
    batch = data.draw(st.lists(messages, min_size=1, max_size=3))
    frame = encode_frame(OP, batch[:1]) if data.draw(st.booleans()) else encode_frame(BULK, batch)
    check_frame(data.draw(mutated(frame)))


@FUZZ
@given(st.integers(min_value=1, max_value=300), st.sampled_from([b"\x81", b"\xa1\x61a", b"\xc1", b"\x9f"]))
def test_deep_nesting(depth: int, opener: bytes) -> None:
    """Deeply nested arrays, maps, tags or indefinite arrays in a message never recurse out of
    bounds (RecursionError) and deeper than the decoder's limit are invalid_cbor."""
    data = b"\xa3\x61k\x62op\x61v\x01\x63msg" + opener * depth + b"\x00"
    check_frame(data)


# -- corpus ----------------------------------------------------------------------------------

_ROW = re.compile(r"^\|\s*`([^`]+)`\s*\|\s*(frame|message)\s*\|\s*([a-z_]+)\s*\|")


def corpus_table() -> dict[str, tuple[str, str]]:
    """``{file: (where, code)}`` from the corpus README."""
    rows: dict[str, tuple[str, str]] = {}
    for line in (CORPUS / "README.md").read_text().splitlines():
        match = _ROW.match(line)
        if match:
            assert match.group(1) not in rows, f"{match.group(1)} listed twice in the corpus README"
            rows[match.group(1)] = (match.group(2), match.group(3))
    return rows


CORPUS_FILES = sorted(p.name for p in CORPUS.glob("*.bin"))


def test_corpus_readme_lists_every_file() -> None:
    """The README's table and the corpus directory name the same files, and the corpus holds
    the required kinds of broken frame."""
    assert set(corpus_table()) == set(CORPUS_FILES)
    codes = {code for _where, code in corpus_table().values()}
    assert {"invalid_cbor", "malformed_frame", "unsupported_version", "frame_too_large"} <= codes
    assert {"invalid_message", "unknown_message", "invalid_id", "invalid_content"} <= codes
    assert len(CORPUS_FILES) >= 20


@pytest.mark.parametrize("name", CORPUS_FILES)
def test_corpus_frame_is_rejected(name: str) -> None:
    """Each corpus frame is refused with the code (and at the level) its README row records."""
    where, code = corpus_table()[name]
    data = (CORPUS / name).read_bytes()
    if where == "frame":
        with pytest.raises(KintsugiError) as info:
            decode_frame(data, max_size=CORPUS_MAX_SIZE, max_messages=CORPUS_MAX_MESSAGES)
        assert info.value.code == code
    else:
        frame = decode_frame(data, max_size=CORPUS_MAX_SIZE, max_messages=CORPUS_MAX_MESSAGES)
        assert frame.messages == []
        assert [e.code for e in frame.errors] == [code]
    check_frame(data)


def test_corpus_oversized_frame_is_refused_for_size_alone() -> None:
    """The oversized corpus frame is otherwise valid: it is refused only for its size."""
    data = (CORPUS / "oversized_frame.bin").read_bytes()
    frame = decode_frame(data, max_size=len(data), max_messages=CORPUS_MAX_MESSAGES)
    assert len(frame.messages) == 1
    assert not frame.errors
