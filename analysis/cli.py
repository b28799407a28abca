"""The ``radar`` command.

Every stage contributes its own sub-commands: any module named ``cli_*.py`` in ``radar.processors``,
``radar.analysis``, ``radar.models`` or ``radar.plots`` that defines ``register(subparsers)`` is picked up. ``register``
adds one or more parsers and sets ``func`` (called with the parsed arguments, returns an exit code).
Heavy imports belong inside ``func`` so that ``radar --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import signal
import sys
import threading

_PACKAGES = ("radar.processors", "radar.analysis", "radar.models", "radar.plots")


def version() -> str:
    """The installed distribution's version (``radar-hep``), or ``unknown`` outside an installation."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("radar-hep")
    except PackageNotFoundError:
        return "unknown"


def _command_modules() -> list[str]:
    names = []
    for package in _PACKAGES:
        module = importlib.import_module(package)
        for info in pkgutil.iter_modules(module.__path__):
            if info.name.startswith("cli_"):
                names.append(f"{package}.{info.name}")
    return sorted(names)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="radar", description="Resonant anomaly detection searches, end to end."
    )
    parser.add_argument("--version", action="version", version=f"radar {version()}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _command_modules():
        importlib.import_module(name).register(subparsers)
    return parser


def setup_logging(verbose: int = 0, quiet: bool = False) -> None:
    from rich.console import Console
    from rich.logging import RichHandler

    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    logging.basicConfig(
        level=level,
        format="%(name)s: %(message)s",
        datefmt="[%X]",
        # logs (and errors) go to stderr; stdout is left to what a command prints as its result
        handlers=[
            RichHandler(console=Console(stderr=True), show_path=False, rich_tracebacks=False, markup=False)
        ],
        force=True,
    )
    # distributed configures its own loggers when first imported: import it now so the levels below stick
    try:
        import distributed  # noqa: F401
    except ImportError:
        pass
    # third-party chatter stays at WARNING unless -vvv
    for noisy in ("distributed", "bokeh", "tornado", "numba", "numexpr", "fsspec", "asyncio", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose > 2 else logging.WARNING)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is (like Ctrl-C), so that a run records "interrupted", cancels its
    queued tasks and releases its lock instead of vanishing mid-write."""


def _terminated(signum: int, frame: object) -> None:
    raise Terminated(f"signal {signal.Signals(signum).name}")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    setup_logging(args.verbose, args.quiet)
    handle_term = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminated) if handle_term else None
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt as error:
        # Ctrl-C or SIGTERM: runs have recorded "interrupted" on their way out; finished units are kept
        logging.getLogger("radar").error(
            "interrupted (%s); what finished is kept: rerun with --resume to continue", error or "Ctrl-C"
        )
        return 143 if isinstance(error, Terminated) else 130
    except (ValueError, FileNotFoundError, OSError, KeyError) as error:
        # user-facing errors (bad input, bad config): one clear line, no traceback unless -vv
        logging.getLogger("radar").error("%s: %s", type(error).__name__, error)
        if args.verbose > 1:
            raise
        return 1
    finally:
        if handle_term:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
