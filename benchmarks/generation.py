"""Generator throughput and memory (run on demand; prints ratios, asserts nothing).

1. Events/s per core of the full generator (Pythia ``nextBatch`` + visible-particle extraction + detector
   response + trigger clustering + HDF5 writing, in one process) against a bare ``pythia.next()`` loop
   with the same settings in the same run. Both rates count *generated* Pythia events per CPU second,
   so the ratio is the price of everything radar adds (target ≥ 0.8); the rate of trigger-passing
   events is printed too.
2. Peak resident memory of a fresh process generating two sample sizes (should be flat: the writer
   appends chunk by chunk).

    python benchmarks/generation.py [--process qcd] [--bare-events 300] [--events 40]
                                    [--rss-sizes 200 800]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def bare_rate(config, seed: int, n_events: int) -> tuple[float, float]:
    """Generated events per CPU second of a bare ``pythia.next()`` loop, and the init CPU seconds."""
    from radar.processors.generate import make_pythia

    start = time.process_time()
    pythia = make_pythia(config, seed)
    init_seconds = time.process_time() - start
    start = time.process_time()
    for _ in range(n_events):
        pythia.next()
    return n_events / (time.process_time() - start), init_seconds


def full_rate(config, seed: int, n_events: int, workdir: Path, init_seconds: float) -> dict:
    """Generated and written events per CPU second of the full generator (in this process)."""
    from radar.processors.generate import generate_to_file

    start = time.process_time()
    summary = generate_to_file(
        config,
        n_events,
        seed,
        workdir / "bench.h5",
        workers=0,
        events_per_task=n_events,
        resume=False,
        progress=False,
    )
    seconds = time.process_time() - start
    # two Pythia initialisations: the up-front settings check and the one task (amortised in real runs,
    # where a task generates 1000 trigger-passing events, i.e. ~10^4 Pythia events)
    steady = seconds - 2 * init_seconds
    return {
        "generated_per_s": summary["n_generated"] / seconds,
        "generated_per_s_without_init": summary["n_generated"] / steady,
        "written_per_s": summary["n_written"] / seconds,
        "trigger_efficiency": summary["trigger_efficiency"],
        "n_generated": summary["n_generated"],
    }


def peak_rss_mb(process: str, n_events: int, workdir: Path) -> float:
    """Peak RSS (MB, Linux ``VmHWM``) of a fresh Python process generating ``n_events`` into HDF5.

    ``ru_maxrss`` is not used: Linux carries the parent's high-water mark into a forked child."""
    code = (
        "from processors.generate import GeneratorConfig, generate_to_file\n"
        f"generate_to_file(GeneratorConfig(process={process!r}), {n_events}, 3, "
        f"r'{workdir / f'rss_{n_events}.h5'}', workers=0, events_per_task=100, resume=False, progress=False)\n"
        "print(next(line.split()[1] for line in open('/proc/self/status') if line.startswith('VmHWM')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1]) / 1024.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--process", default="qcd", choices=["qcd", "resonance", "simulation"])
    parser.add_argument("--bare-events", type=int, default=300)
    parser.add_argument("--events", type=int, default=40, help="trigger-passing events for the full run")
    parser.add_argument("--rss-process", default="resonance")
    parser.add_argument("--rss-sizes", type=int, nargs=2, default=[200, 800])
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)

    # one-time imports (fastjet, PyTables, coffea via processors.jets) are not part of the rate
    import radar.processors.jets  # noqa: F401
    import radar.processors.writers  # noqa: F401
    from radar.processors.generate import GeneratorConfig

    config = GeneratorConfig(process=args.process)
    results: dict = {"process": args.process, "pthat_min": config.pthat_min, "detector": config.detector}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        results["bare_next_per_s"], results["pythia_init_s"] = bare_rate(config, args.seed, args.bare_events)
        results["full"] = full_rate(config, args.seed, args.events, workdir, results["pythia_init_s"])
        results["ratio_full_over_bare"] = results["full"]["generated_per_s"] / results["bare_next_per_s"]
        results["ratio_without_init"] = (
            results["full"]["generated_per_s_without_init"] / results["bare_next_per_s"]
        )
        results["peak_rss_mb"] = {str(n): peak_rss_mb(args.rss_process, n, workdir) for n in args.rss_sizes}
    print(json.dumps(results, indent=2))
    print(
        f"full generator / bare pythia.next(): {results['ratio_full_over_bare']:.2f} including 2 Pythia "
        f"inits of {results['pythia_init_s']:.2f} s, {results['ratio_without_init']:.2f} without (target >= 0.8)"
    )
    sizes = list(results["peak_rss_mb"].items())
    print(f"peak RSS {sizes[0][0]} events: {sizes[0][1]:.0f} MB, {sizes[1][0]} events: {sizes[1][1]:.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
