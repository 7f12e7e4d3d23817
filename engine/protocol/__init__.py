"""The wire protocol (DESIGN §6, normative), sans-I/O: frames, messages, limits, validation."""
