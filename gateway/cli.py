"""``streamgate`` command line: ``streamgate serve [flags]``."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence

from . import __version__
from .settings import Settings, add_arguments, from_args

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamgate",
        description="Push the same messages over chunked HTTP, WebSocket and SSE.",
    )
    parser.add_argument("--version", action="version", version=f"streamgate {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser(
        "serve",
        help="run the gateway",
        description="Run the gateway. Every flag can also be set with the STREAMGATE_* "
        "environment variable shown in its help; a flag beats the variable.",
    )
    add_arguments(serve)
    return parser


def loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop for ``--loop``: uvloop's when asked for (or installed, for
    'auto'), else asyncio's default. Raises ImportError for 'uvloop' without it."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise
        return None
    return uvloop.new_event_loop


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        try:
            settings = from_args(args)
        except ValueError as exc:
            print(f"streamgate: {exc}", file=sys.stderr)
            return 2
        from .logs import configure_logging

        configure_logging(settings)  # --log-level, --log-format
        from .app import serve

        try:
            factory = loop_factory(settings.loop)
        except ImportError:
            print("streamgate: --loop uvloop needs uvloop: pip install uvloop", file=sys.stderr)
            return 2

        def run_one(settings: Settings) -> int:
            try:
                with asyncio.Runner(loop_factory=factory) as runner:
                    runner.run(serve(settings))
            except (ValueError, OSError) as exc:
                print(f"streamgate: {exc}", file=sys.stderr)
                return 1
            return 0

        if settings.workers > 1:
            from .workers import run_workers

            return run_workers(settings, run_one)
        return run_one(settings)
    return 2


if __name__ == "__main__":
    sys.exit(main())
