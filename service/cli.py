"""Online subcommands. `fewstep serve` and `fewstep bench` arrive with the service issue."""

from __future__ import annotations

import argparse


def add_commands(sub: argparse._SubParsersAction) -> None:
    """No online subcommands yet: the service lands with its own issue."""
    del sub
