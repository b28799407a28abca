"""Jet images from particle-level events, and the autoencoders that score them."""

from __future__ import annotations

import numpy as np
import pytest

from radar.processors.images import ImageConfig, ImageFile, write_images


@pytest.fixture(scope="module")
def tiny_images(tmp_path_factory, lhco_tiny):
    path = tmp_path_factory.mktemp("images") / "tiny.h5"
    counts = write_images([lhco_tiny], path, workers=0, chunk_size=400, progress=False)
    return path, counts


def test_images_follow_the_dijet_selection_event_by_event(tiny_images, lhco_tiny, tmp_path):
    """Same events, m_JJ and labels as radar process; every jet image is normalised."""
    from radar.processors.runner import process_files

    path, counts = tiny_images
    table = process_files([lhco_tiny], tmp_path / "f.parquet", workers=0)
    images = ImageFile(path)
    assert counts == {"read": 1000, "written": len(table)} and images.n == len(table)
    np.testing.assert_allclose(images.read(what="mjj"), table["mjj"].to_numpy(), rtol=1e-9)
    np.testing.assert_array_equal(images.read(what="label"), table["label"].to_numpy())
    x = images.read()
    assert x.shape == (len(table), 2, 40, 40) and x.dtype == np.float32
    np.testing.assert_allclose(x.sum(axis=(2, 3)), 1.0, rtol=1e-5)


def test_images_are_centred_rotated_and_flipped(tiny_images):
    x = ImageFile(tiny_images[0]).read().reshape(-1, 40, 40).astype(float)
    centres = (np.arange(40) + 0.5) - 20  # pixel centres in units of the pixel size; row 0 at the top
    cx = (x.sum(axis=1) * centres).sum(axis=1)
    cy = -(x.sum(axis=2) * centres).sum(axis=1)
    assert np.median(np.abs(cx)) < 0.5 and np.median(np.abs(cy)) < 0.5  # centroid in the central pixel
    var_x = (x.sum(axis=1) * centres**2).sum(axis=1) - cx**2
    var_y = (x.sum(axis=2) * centres**2).sum(axis=1) - cy**2
    assert np.mean(var_y >= var_x) > 0.95  # the principal axis is vertical
    skew_y = -(x.sum(axis=2) * (centres - (-cy[:, None])) ** 3).sum(axis=1)
    assert np.mean(skew_y >= 0) > 0.9  # flipped: the long side up


def test_images_do_not_depend_on_the_chunking(tiny_images, lhco_tiny, tmp_path):
    other = tmp_path / "other.h5"
    write_images([lhco_tiny], other, ImageConfig(), workers=0, chunk_size=1000, progress=False)
    np.testing.assert_array_equal(ImageFile(other).read(), ImageFile(tiny_images[0]).read())


def test_image_errors_name_the_file_and_leave_nothing(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.h5"):
        write_images([tmp_path / "missing.h5"], tmp_path / "out.h5", workers=0, progress=False)
    assert not any(tmp_path.iterdir())
    with pytest.raises(FileNotFoundError, match="nope.h5: no such image file"):
        ImageFile(tmp_path / "nope.h5")


def test_autoencoder_scores_outliers_higher_and_is_deterministic():
    from radar.analysis.metrics import auc
    from radar.models.autoencoder import Autoencoder

    rng = np.random.default_rng(0)
    train = rng.normal(size=(3000, 4)) @ np.diag([1.0, 0.5, 0.2, 0.1])
    test = np.r_[
        rng.normal(size=(500, 4)) @ np.diag([1.0, 0.5, 0.2, 0.1]), rng.normal(2.0, 1.0, size=(500, 4))
    ]
    y = np.r_[np.zeros(500), np.ones(500)]
    for nae in (False, True):
        settings = {
            "latent": 2,
            "epochs": 6,
            "pretrain_epochs": 6,
            "nae": nae,
            "seed": 3,
            "latent_steps": 5,
            "x_steps": 5,
        }
        scores = Autoencoder(**settings).fit(train).score(test)
        assert auc(y, scores) > 0.8, (nae, auc(y, scores))
        np.testing.assert_array_equal(scores, Autoencoder(**settings).fit(train).score(test))


def test_nae_flags_the_simpler_anomaly_the_autoencoder_misses():
    """The complexity bias in miniature: trained on a ring of radius 3 (2 of 6 dimensions), the AE
    reconstructs points near the origin (simpler inputs) better than its own training data (AUC < 0.5);
    the NAE's negative phase raises the energy where the model reconstructs well but no data lie, and flags
    them (AUC > 0.6)."""
    from radar.analysis.metrics import auc
    from radar.models.autoencoder import Autoencoder

    rng = np.random.default_rng(0)

    def ring(n):
        t, r = rng.uniform(0, 2 * np.pi, n), 3 + 0.1 * rng.normal(size=n)
        x = 0.1 * rng.normal(size=(n, 6))
        x[:, 0], x[:, 1] = r * np.cos(t), r * np.sin(t)
        return x

    train, normal, simple = ring(3000), ring(500), 0.1 * rng.normal(size=(500, 6))
    y = np.r_[np.zeros(500), np.ones(500)]
    for seed in (1, 2):
        settings = {"latent": 2, "epochs": 10, "pretrain_epochs": 10, "seed": seed}
        ae = Autoencoder(**settings).fit(train)
        nae = Autoencoder(nae=True, latent_steps=10, x_steps=5, **settings).fit(train)
        assert auc(y, np.r_[ae.score(normal), ae.score(simple)]) < 0.45
        assert auc(y, np.r_[nae.score(normal), nae.score(simple)]) > 0.6


def test_nae_keeps_the_moving_average_of_its_negative_phase_weights():
    """``ema=d``: the NAE ends with the exponential moving average (decay d per step) of its
    negative-phase weights, computed alongside the same training (the live weights are unchanged by it);
    the pretraining is not averaged."""
    import torch

    from radar.models.autoencoder import Autoencoder

    rows = np.random.default_rng(3).normal(size=(400, 5))
    settings = {"latent": 2, "epochs": 3, "pretrain_epochs": 2, "batch_size": 100, "nae": True, "seed": 4}
    averages = []

    class Recorder(Autoencoder):
        def _update_ema(self, decay):
            averages.append({k: v.detach().clone() for k, v in self.model.state_dict().items()})
            super()._update_ema(decay)

    last = Autoencoder(**settings).fit(rows)
    averaged = Recorder(ema=0.5, **settings).fit(rows)
    steps = 3 * 4  # 3 negative-phase epochs of 360 training rows at batch 100
    assert len(averages) == steps
    expected = {k: v.clone() for k, v in averages[0].items()}
    for state in averages[1:]:
        for k in expected:
            expected[k] = 0.5 * expected[k] + 0.5 * state[k]
    for k, v in averaged.model.state_dict().items():
        torch.testing.assert_close(v, expected[k])
    # the live weights of the same training are the last step's: those of the run without an average
    for k, v in last.model.state_dict().items():
        torch.testing.assert_close(averages[-1][k], v)
    assert not torch.equal(
        averaged.model.state_dict()["decoder.0.weight"], last.model.state_dict()["decoder.0.weight"]
    )


def test_autoencoder_on_images_trains_and_refuses_bad_inputs():
    from radar.models.autoencoder import Autoencoder

    rng = np.random.default_rng(1)
    images = rng.dirichlet(np.ones(64), size=(200, 2)).reshape(200, 2, 8, 8).astype(np.float32)
    ae = Autoencoder(epochs=2, latent=4).fit(images)
    assert ae.score(images).shape == (200,)
    with pytest.raises(ValueError, match="multiple of 4"):
        Autoencoder(epochs=1).fit(rng.random((20, 2, 6, 6)))
    with pytest.raises(ValueError, match="NaN or inf"):
        Autoencoder(epochs=1).fit(np.full((10, 3), np.nan))


def test_autoencoder_smooths_each_jet_image_before_training_and_scoring():
    """``smooth=σ``: every jet image (channel) is Gaussian-smoothed by σ pixels on its own, before the
    model sees it, for training and scoring alike; intensity is kept away from the edges."""
    from radar.models.autoencoder import Autoencoder

    images = np.zeros((3, 2, 12, 12), np.float32)
    images[:, 0, 6, 6] = 1.0  # one hot pixel in the first jet, an even spread in the second
    images[:, 1] = 1.0 / 144
    ae = Autoencoder(epochs=1, latent=2, smooth=1.0)
    prepared = ae._prepare(images, fit=True).numpy() / 144  # back to the images' own units
    centre = prepared[0, 0]
    assert centre.sum() == pytest.approx(1.0, abs=1e-4)
    assert centre[6, 6] == pytest.approx(1 / (2 * np.pi), rel=0.05)  # a unit 2-d Gaussian's peak
    assert centre[6, 7] == pytest.approx(centre[6, 5]) and centre[6, 7] < centre[6, 6]
    assert prepared[0, 1, 6, 6] == pytest.approx(1 / 144, rel=1e-3)  # nothing leaks between the jets
    np.testing.assert_allclose(ae.seen(images), prepared, rtol=1e-6)  # what the model sees, in image units
    plain = Autoencoder(epochs=1, latent=2)._prepare(images, fit=True).numpy() / 144
    np.testing.assert_allclose(plain, images)
    ae.fit(images)
    smoothed_scores = ae.score(images)
    assert np.isfinite(smoothed_scores).all() and smoothed_scores.shape == (3,)


class _Rows:
    """A chunked source of feature rows that records every read."""

    def __init__(self, rows):
        self.rows, self.n, self.reads = rows, len(rows), []

    def read(self, start, stop):
        self.reads.append(stop - start)
        return self.rows[start:stop]


def test_autoencoder_streams_a_chunked_source_with_bounded_reads(tmp_path):
    """Training from a chunked source (an image file, or any ``n`` + ``read``) reads at most one chunk at a
    time, keeps at most ``val_max`` validation events, finds the same outliers as the in-memory fit and
    is deterministic."""
    import tables

    from radar.analysis.metrics import auc
    from radar.models.autoencoder import Autoencoder

    rng = np.random.default_rng(0)
    scale = np.diag([1.0, 0.5, 0.2, 0.1])
    source = _Rows(rng.normal(size=(3000, 4)) @ scale)
    test = np.r_[rng.normal(size=(500, 4)) @ scale, rng.normal(2.0, 1.0, size=(500, 4))]
    y = np.r_[np.zeros(500), np.ones(500)]
    settings = {"latent": 2, "epochs": 6, "seed": 3, "chunk_size": 400, "val_max": 100}
    ae = Autoencoder(**settings).fit(source)
    assert max(source.reads) <= 400 and len(source.reads) > 6 * (3000 // 400)
    assert auc(y, ae.score(test)) > 0.8
    np.testing.assert_allclose(ae.mean_, source.rows.mean(0), atol=1e-6)
    np.testing.assert_array_equal(ae.score(test), Autoencoder(**settings).fit(_Rows(source.rows)).score(test))

    images = rng.dirichlet(np.ones(64), size=(300, 2)).reshape(300, 2, 8, 8).astype(np.float32)
    path = tmp_path / "img.h5"
    with tables.open_file(str(path), "w") as h5:
        h5.create_array("/", "images", images)
    file = ImageFile(path)
    sizes = []
    read = file.read
    file.read = lambda a=0, b=None, what="images": sizes.append((b or file.n) - a) or read(a, b, what)
    streamed = Autoencoder(epochs=2, latent=4, chunk_size=64, val_max=20).fit(file)
    assert max(sizes) <= 64 and streamed.score(images).shape == (300,)
    assert streamed.history[-1]["val_energy"] > 0


def test_outlier_methods_run_by_name_in_a_search_out_of_fold(tmp_path):
    """``autoencoder`` and ``nae`` in radar search: every data event scored by the fold model that did not
    train on it (same fold split as the scores' roles say), the test set by the fold mean; settings
    checked by name."""
    from radar.analysis.config import config_from_dict
    from radar.analysis.datasets import toy_lhco_like
    from radar.analysis.search import load_scores, run_search
    from radar.analysis.validation import check_settings
    from radar.processors.features import write_feature_table

    write_feature_table(toy_lhco_like(6000, 300, seed=2), tmp_path / "data.parquet")
    base = {
        "input": {"data": [str(tmp_path / "data.parquet")]},
        "methods": ["autoencoder", "nae"],
        "injections": [None],
        "k_folds": 3,
        "compare": False,
        "save_models": False,
        "execution": {"mode": "sync"},
        "output": str(tmp_path / "run"),
        "method_settings": {
            "autoencoder": {"epochs": 3, "latent": 2},
            "nae": {"epochs": 1, "pretrain_epochs": 2, "latent": 2, "latent_steps": 3, "x_steps": 3},
        },
    }
    cfg = config_from_dict(base)
    run_search(cfg, progress=False)
    for method in ("autoencoder", "nae"):
        scores = load_scores(cfg.output_dir, method, None, 0)
        assert np.isfinite(scores["score"]).all() and set(scores["role"]) == {"fold"}
    bad = config_from_dict({**base, "method_settings": {"nae": {"epoch": 3}}})
    with pytest.raises(ValueError, match=r"method_settings.nae: unknown keys \['epoch'\]"):
        check_settings(bad)


def test_radar_images_command_and_the_dask_path(tiny_images, lhco_tiny, tmp_path):
    """``radar images`` on one LocalCluster worker gives the in-process images, chunk order kept."""
    from radar.analysis.cli import main

    out = tmp_path / "cli.h5"
    rc = main(
        [
            "-q",
            "images",
            str(lhco_tiny),
            "-o",
            str(out),
            "--workers",
            "1",
            "--chunk-size",
            "300",
            "--no-progress",
        ]
    )
    assert rc == 0
    np.testing.assert_array_equal(ImageFile(out).read(), ImageFile(tiny_images[0]).read())
    np.testing.assert_array_equal(ImageFile(out).read(what="event"), np.arange(1000))
