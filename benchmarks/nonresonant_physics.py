"""The non-resonant physics study (arXiv:2311.12924's setting at the scale this machine affords): generated
QCD dijets as "data", the "simulation" QCD variant (and the seed's hand-tuned transform of it) as "MC",
semi-visible-jet signals at m_Z' = 2 and 3 TeV; context (HT, MET), SR = HT > 800 GeV and MET > 75 GeV,
features m_JJ and τ21, τ32 of both jets; every method through the trained chain (`radar nonresonant`).

Steps (each skipped when its output exists, so a killed study resumes):

1. ``--generate``: ``radar generate`` + ``radar process`` of the four samples into WORKDIR (QCD with
   ``--pthat-min 300 --trigger-pt 350``: HT > 800 GeV then cuts into the spectrum; the SVJ signals with the
   same trigger);
2. one config per study — ``svj2000`` and ``svj3000`` with the simulation as MC, ``svj2000_hand_tuned``
   with the hand-tuned simulation — with injections chosen for the target S/√B in the SR (``--significances``,
   counted on the data's SR background after half of it is set aside as the truth);
3. ``radar nonresonant`` on each (rows.jsonl, summary.md, closure figures, sic_vs_injection.png).

    python benchmarks/nonresonant_physics.py --workdir runs/nrphys --generate             # hours on 2 cores
    python benchmarks/nonresonant_physics.py --workdir runs/nrphys --studies svj2000 --seeds 5

The injected signal is drawn from the SR (``inject_into: sr``), so one template per seed serves every
injection; the test set's background is the second half of the truth's SR, hence ``--rejection``
(default 100) must stay below its size.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.nonresonant_toy import settings as template_settings  # noqa: E402  (the toy's template settings)

log = logging.getLogger("benchmarks.nonresonant_physics")

SAMPLES = {
    # name: (radar generate arguments, events)
    "qcd_data": (["qcd", "--pthat-min", "300", "--seed", "11"], 300_000),
    "qcd_mc": (["simulation", "--pthat-min", "300", "--seed", "12"], 100_000),
    "svj2000": (["svj", "--mres", "2000", "--seed", "13"], 6_000),
    "svj3000": (["svj", "--mres", "3000", "--seed", "14"], 6_000),
}
STUDIES = {
    # name: (signal sample, simulation transform)
    "svj2000": ("svj2000", "none"),
    "svj3000": ("svj3000", "none"),
    "svj2000_hand_tuned": ("svj2000", "hand_tuned"),
}
REGIONS = {"ht": [800.0, None], "met": [75.0, None]}
FEATURES = ["mjj", "tau21_j1", "tau21_j2", "tau32_j1", "tau32_j2"]


def generate(workdir: Path, trigger_pt: float, workers: int) -> None:
    """``radar generate`` and ``radar process`` of every sample not yet in ``workdir``."""
    radar = [sys.executable, "-c", "import sys; from radar.analysis.cli import main; sys.exit(main())"]
    for name, (arguments, events) in SAMPLES.items():
        raw, table = workdir / f"{name}.h5", workdir / f"{name}.parquet"
        if not raw.exists():
            log.info("generating %s (%d events)", name, events)
            subprocess.run(
                [*radar, "-q", "generate", *arguments, "-n", str(events), "-o", str(raw)]
                + ["--trigger-pt", str(trigger_pt), "--workers", str(workers), "--no-progress"],
                check=True,
            )
        if not table.exists():
            log.info("processing %s", name)
            subprocess.run(
                [*radar, "-q", "process", str(raw), "-o", str(table)]
                + ["--workers", str(workers), "--trigger-pt", str(trigger_pt)],
                check=True,
            )


def sr_background(workdir: Path) -> int:
    """The data's SR background events left after half of the background is set aside as the truth."""
    from radar.analysis.nonresonant import ContextRegions
    from radar.processors.features import read_feature_table

    data = read_feature_table(workdir / "qcd_data.parquet")
    regions = ContextRegions({k: tuple(v) for k, v in REGIONS.items()})
    background = data[data["label"] != 1]
    return int(regions.signal_region(background).sum()) // 2


def study_config(workdir: Path, name: str, args: argparse.Namespace, n_sr: int) -> Path:
    """Write WORKDIR/NAME.yaml; injections (SR signal events) for the target S/√B values."""
    import yaml

    signal, transform = STUDIES[name]
    injections = [int(round(z * math.sqrt(n_sr))) for z in args.significances]
    config = {
        "name": name,
        "output": name,
        "input": {"data": "qcd_data.parquet", "mc": "qcd_mc.parquet", "signal": f"{signal}.parquet"},
        "regions": REGIONS,
        "features": FEATURES,
        "methods": args.methods,
        "injections": injections,
        "inject_into": "sr",
        "seeds": list(range(args.seeds)),
        "simulation_transform": transform,
        "k_folds": 5,
        "rejection": args.rejection,
        "classifier": {"name": "hgb", "settings": {"n_models": 3}},
        "template_settings": template_settings(args.epochs),
    }
    path = workdir / f"{name}.yaml"

    class Plain(yaml.SafeDumper):  # settings shared by two methods are written out twice, not aliased
        def ignore_aliases(self, data) -> bool:
            return True

    path.write_text(yaml.dump(config, Dumper=Plain, sort_keys=False))
    log.info("%s: injections %s SR signal events (SR background %d)", path, injections, n_sr)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("runs/nrphys"))
    parser.add_argument("--generate", action="store_true", help="generate and process missing samples")
    parser.add_argument("--trigger-pt", type=float, default=350.0)
    parser.add_argument("--workers", type=int, default=2, help="Dask workers of generation and processing")
    parser.add_argument("--studies", default=",".join(STUDIES), help=f"comma list of {list(STUDIES)}")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--significances", default="0,0.7,1.5,3,5", help="injected S/sqrt(B) in the SR")
    parser.add_argument("--methods", default="mc,reweight,generate,morph,ideal,supervised")
    parser.add_argument("--epochs", type=int, default=15, help="flows and density-ratio classifiers")
    parser.add_argument("--rejection", type=float, default=100.0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    args.significances = [float(v) for v in args.significances.split(",")]
    args.methods = args.methods.split(",")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    for noisy in ("radar.models.training", "radar.analysis.cwola"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.generate:
        generate(args.workdir, args.trigger_pt, args.workers)
    missing = [s for s in SAMPLES if not (args.workdir / f"{s}.parquet").exists()]
    if missing:
        log.error("%s: no feature tables %s (run with --generate)", args.workdir, missing)
        return 1
    from radar.analysis.cli_nonresonant import load_nonresonant_config, run_nonresonant

    n_sr = sr_background(args.workdir)
    for name in args.studies.split(","):
        if name not in STUDIES:
            log.error("unknown study %r; studies: %s", name, list(STUDIES))
            return 1
        out = run_nonresonant(load_nonresonant_config(study_config(args.workdir, name, args, n_sr)))
        print(f"\n# {name}\n\n{(out / 'summary.md').read_text()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
