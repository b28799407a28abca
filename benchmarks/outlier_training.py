"""Autoencoder training on jet images: wall time on CPU and peak memory against the number of events.

For each size in ``--sizes`` two trainings of the same convolutional AE on the first N images of
``--images`` (a ``radar images`` file), each in a fresh process so that its peak resident memory is its own:

- in memory: the N images read into one array, ``Autoencoder.fit(array)`` (the baseline);
- streamed: ``Autoencoder.fit(ImageFile)`` reading ``--chunk-size`` images at a time.

Printed per size: seconds per epoch and the peak memory above the process's state after importing torch,
for both, and the ratio streamed / in memory. The streamed column should stay flat as N grows (bounded by
the chunk and ``val_max``), the in-memory one grows with N. Run on demand, e.g.::

    python benchmarks/outlier_training.py --images img_qcd.h5 --sizes 10000 30000 --epochs 1
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


class _First:
    """The first ``n`` events of an image file, as a chunked source."""

    def __init__(self, file, n: int):
        self.file, self.n, self.path = file, min(n, file.n), file.path

    def read(self, start: int = 0, stop: int | None = None):
        return self.file.read(start, min(self.n if stop is None else stop, self.n))


def child(images: str, n: int, mode: str, epochs: int, chunk_size: int, threads: int) -> dict:
    import torch

    from radar.models.autoencoder import Autoencoder
    from radar.processors.images import ImageFile

    torch.set_num_threads(threads)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    file = ImageFile(images)
    source = _First(file, n)
    X = source.read() if mode == "memory" else source
    t0 = time.perf_counter()
    Autoencoder(epochs=epochs, latent=16, chunk_size=chunk_size, val_max=1000, seed=0).fit(X)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"n": source.n, "mode": mode, "s_per_epoch": seconds / epochs, "peak_mib": (peak - base) / 1024}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", required=True, help="a radar images file")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10000, 30000])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--chunk-size", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", help="write the rows here")
    parser.add_argument("--child", nargs=2, metavar=("N", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        row = child(
            args.images, int(args.child[0]), args.child[1], args.epochs, args.chunk_size, args.threads
        )
        print(json.dumps(row))
        return 0
    rows = []
    for n in args.sizes:
        for mode in ("memory", "streamed"):
            out = subprocess.run(
                [sys.executable, __file__, "--images", args.images, "--epochs", str(args.epochs),
                 "--chunk-size", str(args.chunk_size), "--threads", str(args.threads),
                 "--child", str(n), mode],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"AE on {args.images}: {args.epochs} epochs, chunk {args.chunk_size}, {args.threads} thread(s)")
    print(
        "| events | in memory: s/epoch | peak MiB | streamed: s/epoch | peak MiB | peak ratio streamed/memory |"
    )
    print("|---|---|---|---|---|---|")
    for mem, st in zip(rows[0::2], rows[1::2], strict=True):
        print(
            f"| {mem['n']} | {mem['s_per_epoch']:.1f} | {mem['peak_mib']:.0f} | {st['s_per_epoch']:.1f} | "
            f"{st['peak_mib']:.0f} | {st['peak_mib'] / max(mem['peak_mib'], 1e-9):.2f} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
