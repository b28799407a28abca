"""Every registered background template and density-ratio method on tiny data (zuko style)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from radar.models import densities, templates
from radar.models.templates import Registry, Template, draw_mjj_kde
from radar.processors.features import LHCO_FEATURES, conform

SR = (3300.0, 3700.0)


def make_table(n: int, seed: int, mjj_range=(2800.0, 4200.0), region: str = "all", shift: float = 0.0):
    """A feature table (GeV) whose features depend on m_JJ; ``region`` keeps "sideband", "signal" or all."""
    rng = np.random.default_rng(seed)
    mjj = rng.uniform(*mjj_range, 3 * n)
    inside = (mjj > SR[0]) & (mjj < SR[1])
    keep = {"sideband": ~inside, "signal": inside, "all": np.ones_like(inside)}[region]
    mjj = mjj[keep][:n]
    k = len(mjj)
    mj1 = rng.gamma(2.0, 40.0, k) * mjj / 3500.0 + 20.0 + shift
    mj2 = mj1 + rng.gamma(1.5, 60.0, k)
    table = pd.DataFrame(
        {
            "mjj": mjj,
            "mj1": mj1,
            "mj2": mj2,
            "delta_mj": mj2 - mj1,
            "tau21_j1": rng.beta(4.0, 3.0, k),
            "tau21_j2": rng.beta(3.0, 3.0, k),
        }
    )
    return conform(table)


@pytest.fixture(scope="module")
def sideband():
    return make_table(400, seed=1, region="sideband")


@pytest.fixture(scope="module")
def signal_region():
    return make_table(300, seed=2, region="signal")


@pytest.fixture(scope="module")
def simulation():
    return make_table(600, seed=3, shift=5.0)


def tiny(cls) -> dict:
    return dict(getattr(cls, "TINY_KWARGS", {"epochs": 1}))


# -- registries --------------------------------------------------------------------------------------------
def test_registries_list_the_builtin_methods():
    assert "cathode" in templates.available()
    assert "anode" in densities.available()
    assert templates.get("cathode").registry_name == "cathode"


def test_unknown_method_names_the_available_ones():
    with pytest.raises(ValueError, match=r"unknown template method 'nope'; available: \[.*'cathode'"):
        templates.get("nope")
    with pytest.raises(ValueError, match="unknown density method"):
        densities.get("cathode")


def test_registering_a_different_class_under_a_taken_name_fails():
    registry = Registry("toy", "radar.models.templates")

    @registry.register("a")
    class First:
        pass

    with pytest.raises(ValueError, match="already registered"):

        @registry.register("a")
        class Second:
            pass


# -- the m_JJ KDE ---------------------------------------------------------------------------------------------
def test_draw_mjj_kde_stays_in_the_signal_region_and_is_seeded(signal_region):
    mjj = signal_region["mjj"].to_numpy()
    draws = draw_mjj_kde(mjj, 5000, seed=4)
    assert draws.shape == (5000,)
    assert draws.min() >= mjj.min() and draws.max() <= mjj.max()
    np.testing.assert_array_equal(draws, draw_mjj_kde(mjj, 5000, seed=4))
    assert not np.array_equal(draws, draw_mjj_kde(mjj, 5000, seed=5))
    assert draws.mean() == pytest.approx(mjj.mean(), abs=15.0)
    # no pile-up at the edges
    assert np.mean(draws == mjj.min()) < 0.01 and np.mean(draws == mjj.max()) < 0.01
    with pytest.raises(ValueError, match="finite SR m_JJ"):
        draw_mjj_kde(np.array([3400.0, np.nan]), 10, seed=0)


# -- every template ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module", params=templates.available())
def fitted_template(request, sideband, simulation):
    cls = templates.get(request.param)
    return cls(seed=7, **tiny(cls)).fit(sideband, simulation=simulation)


def test_template_follows_the_protocol(fitted_template):
    assert isinstance(fitted_template, Template)


def test_template_sample_shapes_and_values(fitted_template, signal_region):
    n = 250
    mjj = draw_mjj_kde(signal_region["mjj"].to_numpy(), n, seed=1)
    events, weights = fitted_template.sample(n, mjj)
    assert isinstance(events, pd.DataFrame)
    assert list(events.columns) == [*LHCO_FEATURES, "mjj"]
    assert len(events) == n and weights.shape == (n,)
    np.testing.assert_array_equal(events["mjj"].to_numpy(), mjj)
    assert np.isfinite(events.to_numpy()).all()
    assert np.isfinite(weights).all() and (weights >= 0).all()


@pytest.mark.parametrize("name", templates.available())
def test_template_same_seed_same_samples(name, sideband, simulation, signal_region):
    cls = templates.get(name)
    mjj = draw_mjj_kde(signal_region["mjj"].to_numpy(), 100, seed=2)
    a = cls(seed=3, **tiny(cls)).fit(sideband, simulation=simulation).sample(100, mjj)
    b = cls(seed=3, **tiny(cls)).fit(sideband, simulation=simulation).sample(100, mjj)
    pd.testing.assert_frame_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


@pytest.mark.parametrize("name", templates.available())
def test_template_rejects_bad_sideband(name, sideband, simulation):
    cls = templates.get(name)
    broken = sideband.copy()
    broken.loc[broken.index[3], "tau21_j2"] = np.nan
    with pytest.raises(ValueError, match="tau21_j2"):
        cls(**tiny(cls)).fit(broken, simulation=simulation)
    with pytest.raises(ValueError, match="delta_mj"):
        cls(**tiny(cls)).fit(sideband.drop(columns="delta_mj"), simulation=simulation)


def test_template_sample_checks_the_mass_count(fitted_template):
    with pytest.raises(ValueError, match="n = 5"):
        fitted_template.sample(5, np.full(4, 3500.0))


# -- CATHODE specifics ---------------------------------------------------------------------------------------
def test_cathode_samples_lie_in_the_training_range(sideband, signal_region):
    cls = templates.get("cathode")
    template = cls(seed=1, **tiny(cls)).fit(sideband)
    mjj = draw_mjj_kde(signal_region["mjj"].to_numpy(), 2000, seed=3)
    events, weights = template.sample(2000, mjj)
    x = events[list(LHCO_FEATURES)].to_numpy()
    train = sideband[list(LHCO_FEATURES)].to_numpy()
    assert (x >= train.min(0)).all() and (x <= train.max(0)).all()
    np.testing.assert_array_equal(weights, np.ones(2000))


def test_cathode_save_load_round_trip(sideband, signal_region, tmp_path):
    cls = templates.get("cathode")
    template = cls(seed=2, **tiny(cls)).fit(sideband)
    mjj = draw_mjj_kde(signal_region["mjj"].to_numpy(), 50, seed=1)
    again = cls.load(template.save(tmp_path / "cathode.pt"))
    pd.testing.assert_frame_equal(again.sample(50, mjj, seed=9)[0], template.sample(50, mjj, seed=9)[0])


# -- every density-ratio method ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", densities.available())
def test_density_score_shapes_and_determinism(name, sideband, signal_region):
    cls = densities.get(name)
    a = cls(seed=5, **tiny(cls)).fit(sideband, signal_region)
    b = cls(seed=5, **tiny(cls)).fit(sideband, signal_region)
    scores = a.score(signal_region)
    assert scores.shape == (len(signal_region),)
    assert np.isfinite(scores).all()
    np.testing.assert_array_equal(scores, b.score(signal_region))
    # events outside the training range still get finite scores
    far = signal_region.head(3).copy()
    far["mj1"] = [0.0, 1e5, 50.0]
    assert np.isfinite(a.score(far)).all()


@pytest.mark.parametrize("name", densities.available())
def test_density_rejects_bad_input(name, sideband, signal_region):
    cls = densities.get(name)
    broken = signal_region.copy()
    broken.loc[broken.index[0], "mjj"] = -1.0
    with pytest.raises(ValueError, match="mjj"):
        cls(**tiny(cls)).fit(sideband, broken)


def test_anode_save_load_round_trip(sideband, signal_region, tmp_path):
    cls = densities.get("anode")
    model = cls(seed=1, **tiny(cls)).fit(sideband, signal_region)
    again = cls.load(model.save(tmp_path / "anode.pt"))
    np.testing.assert_array_equal(again.score(signal_region), model.score(signal_region))
    assert model.n_failed == 0
