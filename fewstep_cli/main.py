"""The `fewstep` console command: the composition root that gathers each package's subcommands.

Subcommands register themselves from `distill.cli` (offline, needs the `distill` extra),
`service.cli` (online), `service.local` (in-process generation, TensorRT engine builds) and
`bench.cli` (benchmarks). Heavy imports (torch, transformers) happen inside the command handlers,
so `fewstep --help` is instant and the base install, without torch, still lists every command.
This module sits above every package; nothing imports it.
"""

from __future__ import annotations

import argparse
import logging
import sys


def build_parser() -> argparse.ArgumentParser:
    from bench.cli import add_commands as add_bench
    from distill.cli import add_commands as add_distill
    from service.cli import add_commands as add_service
    from service.local import add_commands as add_local

    parser = argparse.ArgumentParser(prog="fewstep", description="Few-step text-to-image: train, distill, serve.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_distill(sub)
    add_service(sub)
    add_local(sub)
    add_bench(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.handler(args) or 0)
    except (ValueError, FileNotFoundError) as e:  # config and data errors: a clear message, no traceback
        if args.verbose:
            raise
        print(f"fewstep {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
