"""Tune the detector response against the real LHCO R&D events (run on demand, not a test).

Pythia events are generated once (visible final-state particles with their PDG ids, cached as parquet so
that reruns reuse them), then every detector variant is applied to the *same* events, the LHCO trigger
and radar's feature extraction run (τ ratios with ``--tau-convention lhco_peer``, the convention of the
real files), and the features are compared with the real events of ``../shared/data/lhco/peer_reclustering``
(label 1 for ``resonance``, 0 for ``qcd``) by the KS distance and its ratio to the statistical floor, per
region (``benchmarks/fidelity.py``). One run answers "which detector setting is closer to the R&D's Delphes"
without the generator's own fluctuations between variants.

    python benchmarks/detector_tuning.py --process resonance --events 3000 --output runs/dettune_sig \
        --variants '{"before": {"eflow": false, "hcal_cell": 0.0174}, "default": {"_accept": "zprime,x,y"}}'
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import awkward as ak
import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fidelity import FEATURES, PEER_DIR, compare  # noqa: E402

log = logging.getLogger("detector_tuning")
#: radar's detector before the e-flow model, and the default (with the resonance's sin²θ decays)
DEFAULT_VARIANTS = {"before": {"eflow": False, "hcal_cell": 0.0174}, "default": {"_accept": "zprime,x,y"}}


def generate_particles(process: str, n_events: int, seed: int, cache: Path, pthat_min: float) -> ak.Array:
    """Visible final-state particles ``{id, pt, eta, phi}`` of ``n_events`` Pythia events (cached)."""
    from radar.processors.generate import GeneratorConfig, decay_cos_theta, make_pythia, visible_final_state

    if cache.exists():
        particles = ak.from_parquet(cache)
        if len(particles) >= n_events and "cos_zprime" in particles.fields:
            log.info("read %d cached events from %s", len(particles), cache)
            return particles[:n_events]
    config = GeneratorConfig(process=process, pthat_min=pthat_min)
    pythia = make_pythia(config, seed)
    batches, n, start = [], 0, time.perf_counter()
    while n < n_events:
        batch = pythia.nextBatch(config.batch_size)
        visible = visible_final_state(batch)
        record = ak.zip({f: visible[f] for f in ("id", "pt", "eta", "phi")})
        cos = {f"cos_{k}": v for k, v in decay_cos_theta(batch.prt).items()}
        batches.append(ak.zip({"particles": record, **cos}, depth_limit=1))
        n += len(visible)
        log.info("%s: %d events generated (%.0f s)", process, n, time.perf_counter() - start)
    particles = ak.concatenate(batches)[:n_events]
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".part")
    ak.to_parquet(particles, tmp)
    tmp.replace(cache)
    return particles


def features(particles: ak.Array, detector: dict, seed: int, chunk: int = 500) -> pd.DataFrame:
    """Feature table of the trigger-passing events after the detector variant ``detector``
    (``{"_generator_level": true}``: the visible particles themselves; ``"_accept": "zprime,x,y"``, handled
    by :func:`main`: reshape those decays to sin²θ by accept-reject)."""
    detector = dict(detector)
    from radar.processors.detector import DetectorConfig, detector_response
    from radar.processors.dijet import extract_features
    from radar.processors.jets import JetConfig

    config = None if detector.pop("_generator_level", False) else DetectorConfig(**detector)
    jets = JetConfig(tau_convention="lhco_peer")
    tables = []
    for k, lo in enumerate(range(0, len(particles), chunk)):
        part = particles[lo : lo + chunk].particles
        if config is None:  # generator level
            objects = ak.zip({"pt": part.pt, "eta": part.eta, "phi": part.phi})
        else:
            rng = np.random.default_rng([seed, k])
            objects = detector_response(part.id, part.pt, part.eta, part.phi, rng, config)
        table, _ = extract_features(objects, np.zeros(len(part)), config=jets)
        tables.append(table)
    return pd.concat(tables, ignore_index=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--process", choices=("resonance", "qcd"), default="resonance")
    parser.add_argument("--events", type=int, default=3000, help="generated events (before the trigger)")
    parser.add_argument("--seed", type=int, default=3500)
    parser.add_argument("--pthat-min", type=float, default=1100.0, help="qcd only (GeV)")
    parser.add_argument(
        "--variants", default=json.dumps(DEFAULT_VARIANTS), help="JSON {name: DetectorConfig}"
    )
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        variants = json.loads(args.variants)
    except json.JSONDecodeError as err:
        parser.error(f"--variants is not JSON: {err}")
    if not PEER_DIR.is_dir():
        print(f"skipped: the real events are not there ({PEER_DIR})")
        return 0
    from radar.processors.features import read_feature_table

    real = read_feature_table(PEER_DIR)
    real = real[real["label"] == (1 if args.process == "resonance" else 0)]
    cache = args.output / f"particles_{args.process}_{args.seed}.parquet"
    particles = generate_particles(args.process, args.events, args.seed, cache, args.pthat_min)
    results, medians = {}, {}
    for name, detector in variants.items():
        start = time.perf_counter()
        detector = dict(detector)
        accept = detector.pop("_accept", None)
        chosen = particles
        if accept:  # decay-angle hypotheses by accept-reject: a subset of "zprime,x,y" made sin²θ
            from radar.processors.generate import longitudinal_weight

            cos = {k: ak.to_numpy(particles[f"cos_{k}"]) for k in ("zprime", "x", "y")}
            weight = longitudinal_weight(cos, decays=tuple(accept.split(",")))
            chosen = particles[np.random.default_rng([args.seed, 1]).random(len(particles)) < weight]
        table = features(chosen, detector, args.seed)
        table.to_parquet(args.output / f"features_{args.process}_{name}.parquet")
        results[name] = compare(table, real)
        medians[name] = {f: float(table[f].median()) for f in ("mjj", *FEATURES)}
        log.info("%s: %d triggered events (%.0f s)", name, len(table), time.perf_counter() - start)
    medians["real"] = {f: float(real[f].median()) for f in ("mjj", *FEATURES)}
    lines = []
    for region in ("all", "SR"):
        lines += [
            f"\n{args.process}, region {region}: KS (ratio to the floor)",
            "| feature | " + " | ".join(variants) + " |",
            "|---" * (len(variants) + 1) + "|",
        ]
        for f in results[next(iter(variants))][region]:
            cells = [
                f"{results[v][region][f]['ks']:.3f} ({results[v][region][f]['ratio']:.1f}x)" for v in variants
            ]
            lines.append(f"| {f} | " + " | ".join(cells) + " |")
        counts = [str(results[v][region]["mj1"]["n_gen"]) for v in variants]
        lines.append(
            f"| events gen / real | {' | '.join(counts)} (real {results[name][region]['mj1']['n_real']}) |"
        )
    lines += ["\nmedians", "| feature | " + " | ".join(medians) + " |", "|---" * (len(medians) + 1) + "|"]
    for f in ("mjj", *FEATURES):
        lines.append(f"| {f} | " + " | ".join(f"{medians[v][f]:.3f}" for v in medians) + " |")
    text = "\n".join(lines)
    print(text)
    (args.output / f"tuning_{args.process}.md").write_text(text + "\n")
    (args.output / f"tuning_{args.process}.json").write_text(
        json.dumps({"variants": variants, "ks": results}, indent=1)
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
