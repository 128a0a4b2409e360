"""Run-directory plumbing (tfsnn.runs): best-epoch checkpoint and callback order."""
import json

import keras
import numpy as np

from tfsnn import runs


def tiny_model():
    m = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    m.compile("sgd", "mse")
    return m


def test_best_checkpoint_keeps_the_best_epoch(tmp_path):
    run = runs.RunDir(tmp_path / "r")
    run.prepare({}, (), False)
    cb = runs.BestCheckpoint(run, "val_loss", "min")
    cb.set_model(tiny_model())
    for epoch, v in enumerate([0.5, 0.3, 0.4, 0.3]):  # ties do not replace the best
        cb.on_epoch_end(epoch, {"val_loss": v})
    assert run.best_epoch() == {"epoch": 2, "monitor": "val_loss", "value": 0.3}
    assert run.best.is_file()
    up = runs.BestCheckpoint(run, "val_acc", "max")
    up.set_model(tiny_model())
    for epoch, v in enumerate([0.1, 0.7, 0.2]):
        up.on_epoch_end(epoch, {"val_acc": v})
    assert run.best_epoch()["epoch"] == 2 and up.best == 0.7


def test_best_checkpoint_on_resume(tmp_path):
    run = runs.RunDir(tmp_path / "r")
    run.prepare({}, (), False)
    cb = runs.BestCheckpoint(run)
    cb.set_model(tiny_model())
    cb.on_epoch_end(4, {"val_loss": 0.2})  # best of epoch 5
    assert runs.BestCheckpoint(run, resumed_at=5).best == 0.2  # carried over
    assert runs.BestCheckpoint(run, resumed_at=0).best is None  # a fresh start ignores it
    # saved by an epoch whose checkpoint was never written (crash in between): ignored
    assert runs.BestCheckpoint(run, resumed_at=4).best is None
    assert runs.BestCheckpoint(run, "val_accuracy", "max", resumed_at=5).best is None


def test_fit_logs_callback_values_and_best_model_survives_overwrite(tmp_path):
    """Callbacks passed to ``fit`` run before the CSV logger (their log entries are written);
    ``--overwrite`` removes the best-epoch files with the rest of the old run."""

    class AddsLog(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs["extra"] = 10.0 + epoch

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(32, 3)).astype("float32"), rng.normal(size=(32, 2)).astype("float32")
    import tensorflow as tf
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    run = runs.RunDir(tmp_path / "r")
    run.prepare({}, (), False)
    runs.fit(run, tiny_model, lambda e: ds, 4, 3, False, val_ds=ds, callbacks=[AddsLog()],
             tensorboard=False, verbose=0, best=("val_loss", "min"))
    rows = run.history.read_text().strip().splitlines()
    head = rows[0].split(",")
    assert "extra" in head and [float(r.split(",")[head.index("extra")]) for r in rows[1:]] == \
        [10.0, 11.0, 12.0]
    val = [float(r.split(",")[head.index("val_loss")]) for r in rows[1:]]
    assert run.best_epoch()["epoch"] == int(np.argmin(val)) + 1
    assert json.loads(run.best_state.read_text())["value"] == min(val)
    run.prepare({}, (), False, overwrite=True)
    assert not run.best.exists() and not run.best_state.exists()
