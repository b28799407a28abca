"""The generator-fidelity benchmark's yardstick: the KS distance against its statistical floor."""

from __future__ import annotations

import numpy as np
import pandas as pd

from benchmarks.fidelity import FEATURES, REGIONS, compare, ks_row


def test_the_floor_is_the_mean_ks_of_one_distribution():
    """Two samples of one distribution give KS / floor ≈ 1 on average (the floor is the null mean), and a
    shifted sample is many floors away."""
    rng = np.random.default_rng(1)
    ratios = [ks_row(rng.normal(size=3000), rng.normal(size=1000))["ratio"] for _ in range(200)]
    assert 0.93 < np.mean(ratios) < 1.07
    assert ks_row(rng.normal(0.5, 1, 3000), rng.normal(size=1000))["ratio"] > 5


def test_compare_covers_every_region_and_feature():
    rng = np.random.default_rng(2)

    def table(n):
        frame = pd.DataFrame({f: rng.uniform(0, 1, n) for f in FEATURES})
        frame["mjj"] = rng.uniform(2600, 7000, n)
        return frame

    result = compare(table(5000), table(4000))
    assert set(result) == set(REGIONS)
    assert set(result["all"]) == {"mjj", *FEATURES} and set(result["SR"]) == set(FEATURES)
    assert all(row["ratio"] < 4 for region in result.values() for row in region.values())
