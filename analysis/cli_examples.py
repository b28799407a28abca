"""``radar examples``: the example configs that ship with radar (``radar.configs``: the repository's
``configs/`` folder) and the presets (``radar.analysis.presets``), listed or copied out to edit."""

from __future__ import annotations

import argparse
import logging
from importlib import resources
from pathlib import Path

log = logging.getLogger(__name__)

#: where the shipped YAML files live, in the order they are listed
SOURCES = (("radar.configs", "config"), ("radar.analysis.presets", "preset"))


def shipped() -> dict[str, tuple[str, object]]:
    """Name (file stem) → (kind, the file as an importlib.resources Traversable) of every shipped YAML."""
    found: dict[str, tuple[str, object]] = {}
    for package, kind in SOURCES:
        try:
            folder = resources.files(package)
        except ModuleNotFoundError:  # not installed with this radar
            continue
        for entry in sorted(folder.iterdir(), key=lambda e: e.name):
            if entry.name.endswith(".yaml") and entry.name[:-5] not in found:
                found[entry.name[:-5]] = (kind, entry)
    return found


def summary(text: str) -> str:
    """The first comment line of a YAML file (what it is for), or an empty string."""
    for line in text.splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
        if line.strip():
            break
    return ""


def copy_example(name: str, output: str | Path, overwrite: bool = False) -> Path:
    """Write the shipped example ``name`` into the directory ``output`` (made if needed); returns the file.
    Paths inside the config are relative to the file: edit them to point at your data."""
    from radar.processors.io import atomic_output

    available = shipped()
    if name not in available:
        raise ValueError(f"no shipped example {name!r}; available: {sorted(available)}")
    target = Path(output) / f"{name}.yaml"
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} exists; use --overwrite to replace it")
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(target) as tmp:
        Path(tmp).write_text(available[name][1].read_text())
    log.info("wrote %s (relative paths inside it are relative to that file: point them at your data)", target)
    return target


def _run(args: argparse.Namespace) -> int:
    if args.name is None:
        for name, (kind, entry) in shipped().items():
            print(f"{name:<24} {kind:<7} {summary(entry.read_text())}")
        return 0
    if args.output is None:
        available = shipped()
        if args.name not in available:
            raise ValueError(f"no shipped example {args.name!r}; available: {sorted(available)}")
        print(available[args.name][1].read_text(), end="")
        return 0
    copy_example(args.name, args.output, args.overwrite)
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "examples",
        help="list, print or copy the example configs and presets that ship with radar",
        description="Without NAME: list the shipped example configs and presets. With NAME: print it, or "
        "write it into DIR with -o to edit (paths inside are relative to the file).",
    )
    parser.add_argument("name", nargs="?", help="an example's name (as listed)")
    parser.add_argument("-o", "--output", metavar="DIR", help="write NAME.yaml into this directory")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing file")
    parser.set_defaults(func=_run)
