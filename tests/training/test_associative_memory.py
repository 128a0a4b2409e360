"""Associative-memory task: data, corruption model, filtered MSE, training (spec §A.7, D.1.11)."""
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from tfsnn import runs
from tfsnn.layers.filters import DualExpReadoutFilter
from tfsnn.training import associative_memory as am
from tfsnn.losses import FilteredMSE

@pytest.fixture(scope="module")
def patterns():
    return am.load_patterns()


def test_dataset_and_silent_baseline(patterns):
    assert patterns.shape == (10, 300, 300)
    assert set(np.unique(patterns)) == {0.0, 1.0}
    counts = patterns.sum(axis=(1, 2))
    assert counts.min() == 935 and counts.max() == 1790
    assert patterns.sum(axis=2).max() == 17  # spikes per train
    assert am.silent_loss(patterns, am.DEFAULTS) == pytest.approx(0.14215, abs=5e-5)


def test_filtered_mse_is_mse_of_filtered_trains():
    rng = np.random.default_rng(0)
    y = (rng.random((2, 30, 4)) < 0.2).astype(np.float32)
    p = (rng.random((2, 30, 4)) < 0.2).astype(np.float32)
    f = DualExpReadoutFilter(8, 2)
    ref = np.mean((f(p).numpy() - f(y).numpy()) ** 2)
    assert float(FilteredMSE()(y, p)) == pytest.approx(ref, rel=1e-6)


def test_delay_and_corruption_model():
    rng = np.random.default_rng(1)
    pat = (rng.random((60, 50)) < 0.1).astype(np.float32)
    d = am.delayed(pat, 4)
    np.testing.assert_array_equal(d[:, 4:], pat[:, :-4])
    assert d[:, :4].sum() == 0
    c = {**am.DEFAULTS, "erase_size": 10}
    # no corruption branch: only Bernoulli noise spikes are added
    x = am.corrupt(pat, np.random.default_rng(2), {**c, "corrupt_p": 0.0})
    assert np.all(x >= pat) and 0 < (x - pat).sum() < 0.02 * pat.size
    # erase only, no noise: 10 whole channels or a 10x10 block are zeroed
    for seed in range(6):
        x = am.corrupt(pat, np.random.default_rng(seed), {**c, "corrupt_p": 1.0, "jitter_p": 0.0,
                                                         "erase_p": 1.0, "noise_p": 0.0})
        assert np.all(x <= pat)
    # jitter only: spike counts per channel never grow, times move by few steps
    x = am.corrupt(pat, np.random.default_rng(3), {**c, "corrupt_p": 1.0, "jitter_p": 1.0,
                                                   "erase_p": 0.0, "noise_p": 0.0})
    assert np.all(x.sum(1) <= pat.sum(1)) and not np.array_equal(x, pat)
    # an item depends only on (seed, epoch, index)
    a = am.make_item(pat[None], c, 0, 3, 7)
    b = am.make_item(pat[None], c, 0, 3, 7)
    np.testing.assert_array_equal(a[0], b[0])
    assert a[0].shape == (50, 60)  # [T, channels]
    assert not np.array_equal(a[0], am.make_item(pat[None], c, 0, 4, 7)[0])


def test_flags_are_validated():
    with pytest.raises(runs.ConfigError, match="--noise_p"):
        am.resolve({"noise_p": 2.0})
    with pytest.raises(runs.ConfigError, match="--filter_radius"):
        am.resolve({"filter_radius": 0.8})  # below the initial pole exp(-1/8)
    with pytest.raises(runs.ConfigError, match="--filter_radius"):
        am.resolve({"filter_radius": 1.0})
    assert am.resolve({"filter_radius": 0})["filter_radius"] == 0
    with pytest.raises(runs.ConfigError, match="--epochs"):
        am.resolve({"epochs": 0})


def test_tiny_training_writes_reconstructions(tmp_path):
    rng = np.random.default_rng(4)
    pats = (rng.random((3, 12, 20)) < 0.15).astype(np.float32)
    cfg = dict(epochs=1, batch_size=3, repeats=2, eval_repeats=1, erase_size=4,
               run_dir=str(tmp_path / "am"), verbose=0, tensorboard=False)
    r = am.train(cfg, patterns=pats)
    assert np.isfinite(r["test_loss"]) and len(r["pattern_losses"]) == 3
    assert Path(r["reconstructions_png"]).is_file()
    assert Path(r["reconstructions_png"]).read_bytes()[:4] == b"\x89PNG"
    import json
    rep = json.loads((tmp_path / "am" / "report.json").read_text())  # spikes / MACs / energy
    assert (tmp_path / "am" / "report.md").is_file()
    assert r["spikes_per_image"] == pytest.approx(rep["totals"]["spikes_per_image"])
    assert set(r["energy_J_per_image"]) >= {"loihi", "cmos45_int32"}
    ds = am.epoch_maker(pats, {**am.resolve(cfg)}, 0, 2)(tf.constant(0, tf.int64))
    xb, yb = next(iter(ds))
    assert tuple(xb.shape) == (3, 20, 12) and tuple(yb.shape) == (3, 20, 12)


def test_best_dev_epoch_is_tested_and_stability_logged(tmp_path):
    """Test loss and PNG come from the best dev epoch's model (kept across resume); each
    synapse's stable fraction is in history.csv; the synapses carry the radius constraint."""
    import csv
    import keras
    rng = np.random.default_rng(5)
    pats = (rng.random((3, 12, 20)) < 0.15).astype(np.float32)
    cfg = dict(epochs=3, batch_size=3, repeats=2, eval_repeats=1, dev_repeats=1, erase_size=4,
               learning_rate=0.05, run_dir=str(tmp_path / "am"), verbose=0, tensorboard=False)
    am.train(cfg, patterns=pats)
    r = am.train({**cfg, "epochs": 5, "resume": True}, patterns=pats)
    rows = list(csv.DictReader(open(tmp_path / "am" / "history.csv")))
    val = [float(row["val_loss"]) for row in rows]
    assert len(rows) == 5 and r["best_epoch"] == int(np.argmin(val)) + 1
    assert r["best_val_loss"] == pytest.approx(min(val), rel=1e-6)
    assert all(0.0 <= float(row["stable_synapse1"]) <= 1.0 for row in rows)
    best = keras.models.load_model(runs.RunDir(tmp_path / "am").best)
    c = am.resolve(cfg)
    test = am.epoch_maker(pats, c, c["seed"] + am.TEST_SEED_OFFSET, 1, False)(
        tf.constant(0, tf.int64))
    assert r["test_loss"] == pytest.approx(float(best.evaluate(test, verbose=0)), rel=1e-6)
    assert np.isfinite(r["test_loss_last"])
    assert best.get_layer("synapse1").max_radius == 0.99
    with pytest.raises(runs.ConfigError, match="--filter_radius"):  # the run's models hold it
        am.train({**cfg, "epochs": 6, "resume": True, "filter_radius": 0}, patterns=pats)
