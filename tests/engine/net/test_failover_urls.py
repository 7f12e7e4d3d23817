"""Several node URLs on the command line (engine/cli/urls.py :func:`node_urls`, used by
``kintsugi kv``): comma-separated, each checked like a single node URL, one URL still one
URL; a host that does not resolve among them fails the command at once."""

from __future__ import annotations

import argparse
import asyncio

import pytest

from engine.cli.kv import register
from engine.cli.urls import node_urls, resolve_nodes
from engine.errors import HostNotFound


def test_one_url_is_a_list_of_one() -> None:
    assert node_urls("ws://127.0.0.1:4100") == ["ws://127.0.0.1:4100"]


def test_several_urls_keep_their_order_and_lose_repeats() -> None:
    text = "ws://a:4100, wss://b:443/kintsugi/,ws://a:4100"
    assert node_urls(text) == ["ws://a:4100", "wss://b:443/kintsugi/"]


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("ws://a:4100,,ws://b:4100", "empty node URL"),
        ("ws://a:4100,", "empty node URL"),
        ("ws://a:4100,http://b:4100", "is not a node URL"),
        ("ws://a:4100,ws://b:99999", "not a number from 1 to 65535"),
    ],
)
def test_a_bad_url_among_several_is_a_usage_error(text: str, says: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=says):
        node_urls(text)


def test_kv_commands_take_comma_separated_urls_and_say_so(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["kv", "watch", "ws://127.0.0.1:1,ws://127.0.0.1:2", "p/", "--key", "k"])
    assert args.url == ["ws://127.0.0.1:1", "ws://127.0.0.1:2"]
    assert parser.parse_args(["kv", "get", "ws://127.0.0.1:1", "x", "--key", "k"]).url == ["ws://127.0.0.1:1"]
    with pytest.raises(SystemExit):
        parser.parse_args(["kv", "watch", "--help"])
    watch_help = " ".join(capsys.readouterr().out.split())
    assert "comma-separated" in watch_help and "another one when it goes away" in watch_help


def test_every_host_must_resolve() -> None:
    asyncio.run(resolve_nodes(["ws://127.0.0.1:1", "ws://[::1]:2"], 5))
    with pytest.raises(HostNotFound, match=r"no-such-host\.invalid"):
        asyncio.run(resolve_nodes(["ws://127.0.0.1:1", "ws://no-such-host.invalid:2"], 5))
