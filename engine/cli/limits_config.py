"""A node's limits from ``--config FILE.toml`` and from command-line flags.

Every field of :class:`~engine.protocol.limits.Limits` can be set, in a ``[limits]`` table of
a TOML file and by a flag of the same name (``max_frame_size`` is ``--max-frame-size``)::

    [limits]
    max_frame_size = 8388608       # bytes
    rate_per_second = 1000.0       # frames per second
    handshake_timeout = 5          # seconds (an integer is fine where seconds are meant)

Precedence: a flag wins over the file, the file over the built-in default. Whole-number limits
take TOML integers; the others (rates, seconds) integers or floats. Every value must be
greater than zero. Anything else is a :class:`~engine.errors.UsageError` naming the key: a
file that cannot be read or is not TOML, a table other than ``[limits]``, an unknown key, a
value of the wrong type (booleans are not numbers here) or not above zero.
"""

from __future__ import annotations

import argparse
import dataclasses
import tomllib
from pathlib import Path
from typing import Any

from engine.errors import UsageError
from engine.protocol.limits import DEFAULT_LIMITS, Limits

__all__ = ["LIMITS_TABLE", "add_limit_flags", "config_help", "limits_from", "load_limits_file"]

#: The TOML table that holds the limits.
LIMITS_TABLE = "limits"


def _fields() -> list[dataclasses.Field[Any]]:
    return list(dataclasses.fields(Limits))


def _kind(name: str) -> type:
    """``int`` or ``float``: the type of the limit's default."""
    return type(getattr(DEFAULT_LIMITS, name))


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _checked(where: str, name: str, value: Any) -> int | float:
    """``value`` for the limit ``name`` (from ``where``), or :class:`UsageError`."""
    kind = _kind(name)
    numeric = (int,) if kind is int else (int, float)
    if isinstance(value, bool) or not isinstance(value, numeric):
        wanted = "an integer" if kind is int else "a number"
        raise UsageError(f"{where}: {name} must be {wanted}, not {value!r}")
    if value <= 0:
        raise UsageError(f"{where}: {name} must be greater than 0, not {value!r}")
    return kind(value)  # type: ignore[no-any-return]


def load_limits_file(path: Path) -> dict[str, int | float]:
    """The limits ``path`` sets (name → value), checked as the module docstring says."""
    try:
        with path.open("rb") as file:
            document = tomllib.load(file)
    except OSError as exc:
        raise UsageError(f"--config {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"--config {path}: not valid TOML ({exc})") from None
    unknown = sorted(set(document) - {LIMITS_TABLE})
    if unknown:
        raise UsageError(f"--config {path}: unknown key {unknown[0]!r} (the file holds a [{LIMITS_TABLE}] table)")
    table = document.get(LIMITS_TABLE, {})
    if not isinstance(table, dict):
        raise UsageError(f"--config {path}: {LIMITS_TABLE} must be a table ([{LIMITS_TABLE}])")
    names = {f.name for f in _fields()}
    values: dict[str, int | float] = {}
    for name, value in table.items():
        if name not in names:
            raise UsageError(
                f"--config {path}: unknown key {LIMITS_TABLE}.{name!r}; the limits are {', '.join(sorted(names))}"
            )
        values[name] = _checked(f"--config {path}: {LIMITS_TABLE}", name, value)
    return values


def add_limit_flags(parser: argparse.ArgumentParser) -> None:
    """A flag per limit; unset flags leave the attribute absent (the file or default applies)."""
    group = parser.add_argument_group(
        "limits", "each overrides the same key of --config's [limits] table (see docs/protocol.md, Limits)"
    )
    for field in _fields():
        default = getattr(DEFAULT_LIMITS, field.name)
        group.add_argument(
            _flag(field.name),
            dest=f"limit_{field.name}",
            metavar="N" if isinstance(default, int) else "X",
            type=_argument_type(field.name),
            default=argparse.SUPPRESS,
            help=f"(default {default:g})",
        )


def _argument_type(name: str) -> Any:
    def parse(text: str) -> int | float:
        try:
            value: int | float = int(text) if _kind(name) is int else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not {'an integer' if _kind(name) is int else 'a number'}"
            ) from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text!r} is not greater than 0")
        return value

    parse.__name__ = name
    return parse


def limits_from(args: argparse.Namespace) -> Limits:
    """The limits of the parsed command line: defaults, then ``--config``'s, then the flags'."""
    values: dict[str, int | float] = {}
    config = getattr(args, "config", None)
    if config is not None:
        values.update(load_limits_file(Path(config)))
    for field in _fields():
        flag = getattr(args, f"limit_{field.name}", None)
        if flag is not None:
            values[field.name] = flag
    return dataclasses.replace(DEFAULT_LIMITS, **values)  # type: ignore[arg-type]


def config_help() -> str:
    """The ``--config`` file format, for ``node serve --help``."""
    example = ", ".join(f"{f.name} = {getattr(DEFAULT_LIMITS, f.name)!r}" for f in _fields()[:3])
    return (
        f"--config FILE.toml sets limits in a [{LIMITS_TABLE}] table, one key per limit, named as the "
        f"flags below without '--' and with '_' for '-' (e.g. [{LIMITS_TABLE}] {example}). Whole-number "
        "limits take integers, rates and seconds integers or floats; every value must be above 0. An "
        "unknown key or a value of the wrong type is refused, naming the key. A flag wins over the file."
    )
