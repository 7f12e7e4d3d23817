"""The wire protocol (DESIGN §6, normative), sans-I/O: bytes and decoded messages in,
decisions and messages out; no sockets, clocks or files (time is passed in).

- :mod:`~engine.protocol.frames`: the frame envelope, size limit checked before decoding.
- :mod:`~engine.protocol.messages`: the messages, one module per family.
- :mod:`~engine.protocol.handshake`: the challenge/hello handshake, both sides.
- :mod:`~engine.protocol.guard`: each later frame's fate (rate limit, malformed budget).
- :mod:`~engine.protocol.ratelimit`: the token bucket.
- :mod:`~engine.protocol.limits`: every limit and close code, named and documented.

Imports only ids, crypto, codec, errors and model (DESIGN §2); :mod:`engine.net` is the
shell that moves the bytes.
"""
