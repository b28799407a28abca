"""Atomic output and small I/O helpers shared by every stage.

Every artefact radar writes goes through :func:`atomic_output`: the data is written to a temporary file
in the destination directory and renamed into place only when complete, so a killed run never leaves a
half-written file under the final name.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` on success, delete it on error."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_parts(final)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.{os.getpid()}.", suffix=".part", dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp creates 0600; outputs get the usual mode (0666 less the umask), like open() would give
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)
    try:
        yield tmp_path
        os.replace(tmp_path, final)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def _remove_stale_parts(final: Path) -> None:
    """Temporary files of ``final`` left by a process that was killed (its pid is in the name and no longer
    runs) are removed; those of a running process are left alone."""
    prefix = f".{final.name}."
    for part in final.parent.glob(f"{glob.escape(prefix)}*.part"):
        pid = part.name[len(prefix) :].split(".", 1)[0]
        if not pid.isdigit() or pid_alive(int(pid)):
            continue
        log.info("removing %s, left by a killed process (pid %s)", part, pid)
        part.unlink(missing_ok=True)


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this machine (one of another user counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def error_summary(error: BaseException) -> str:
    """One line for an error raised by a file library: HDF5's C-library back trace (PyTables puts the whole
    stack into its message) becomes its innermost reason, e.g. ``truncated file: eof = 300000, ...`` or
    ``file signature not found``; other messages keep their first line."""
    text = str(error).strip()
    if "HDF5 error back trace" in text:
        stack = text.split("End of HDF5 error back trace")[0]
        reasons = [ln.strip() for ln in stack.splitlines() if ln.startswith("    ") and ln.strip()]
        if reasons:
            return f"HDF5: {reasons[-1]}"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[0] if lines else type(error).__name__


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")
    return Path(path)


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes (for manifests and cache keys). A directory (e.g. of LHCO peer-reclustering
    files) hashes the names and SHA-256s of the files in it, in name order."""
    if os.path.isdir(path):
        digest = hashlib.sha256()
        for entry in sorted(Path(path).rglob("*")):
            if entry.is_file():
                digest.update(f"{entry.relative_to(path).as_posix()}\0{file_sha256(entry, chunk)}\n".encode())
        return digest.hexdigest()
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def package_versions() -> dict[str, str]:
    """Versions of the packages that decide radar's numbers (for provenance); a copy of the process's
    lookup (the package metadata is read once: ≈ 12 ms, paid by every output otherwise)."""
    return dict(_package_versions())


@functools.cache
def _package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in (
        "radar-hep",
        "numpy",
        "awkward",
        "dask",
        "dask-awkward",
        "coffea",
        "fastjet",
        "uproot",
        "torch",
        "nflows",
        "hist",
        "pythia8mc",
    ):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out
