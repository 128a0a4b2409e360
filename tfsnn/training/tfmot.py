"""``--qat_backend tfmot`` of ``scripts/train_quant.py``: ALL_INT QAT with tfmot under Keras 2.

The procedure around the bridge ``tfsnn.interop.tfmot``; like it, this module needs
``pip install tfsnn[tfmot]`` and ``TF_USE_LEGACY_KERAS=1`` set before TensorFlow is imported.
"""
import time

import numpy as np
import tf_keras

from tfsnn import data, runs
from tfsnn.interop import portable
from tfsnn.interop import tfmot as bridge
from tfsnn.training import quant


def compile_model(model, learning_rate=1e-3, decay_steps=None):
    """Compile a tf_keras model with the tfsnn recipe (Adam, optional cosine decay, CE loss)."""
    lr = learning_rate
    if decay_steps:
        lr = tf_keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps)
    model.compile(optimizer=tf_keras.optimizers.Adam(lr),
                  loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def np_logits(model, x, batch_size=500):
    """Logits ``[N, classes]`` (numpy) of ``model`` on ``x`` ``[N, ...]``, inference mode, in batches."""
    return np.concatenate([model(x[i:i + batch_size], training=False).numpy()
                           for i in range(0, len(x), batch_size)])


def train(c, arrays):
    """tfmot QAT, then a tfsnn run dir; returns the results dict also written to ``results.json``.

    ``c`` is a resolved ``tfsnn.training.quant`` config, ``arrays`` its ``(train, val, test)``.
    Writes the usual run dir (``flags.json``, ``history.csv``, ``tb/``, ``results.json``) plus
    ``portable.npz`` (the trained kernels and BN parameters) and ``model.keras``: the tfsnn
    Keras 3 model rebuilt from them, which ``scripts/spiking_inference.py`` converts as usual.
    The results hold the test accuracy of both models and their prediction disagreements.
    """
    run = runs.RunDir(c["run_dir"])
    run.prepare(c, quant.IDENTITY_KEYS, resume=False, overwrite=c["overwrite"],
                extras=("inference.json", "portable.npz"))
    tf_keras.utils.set_random_seed(c["seed"])
    (xtr, ytr), val, (xte, yte) = arrays
    steps = runs.steps_for(len(xtr), c["batch_size"])
    qat = bridge.quantize_model(bridge.float_model(c["model"]), c["k"], c["use_ternary"])
    compile_model(qat, c["learning_rate"],
                  c["epochs"] * steps if c["lr_schedule"] == "cosine" else None)
    make = quant.epoch_maker(c["dataset"], xtr, ytr, c["batch_size"], c["seed"])
    val_ds = None if val is None else data.pipeline(c["dataset"], *val, c["batch_size"], False)
    cbs = [tf_keras.callbacks.CSVLogger(str(run.history))]
    if c["tensorboard"]:
        cbs.append(tf_keras.callbacks.TensorBoard(log_dir=str(run.tensorboard)))
    start = time.perf_counter()
    hist = qat.fit(runs.epoch_dataset(make, 0, c["epochs"]), epochs=c["epochs"],
                   steps_per_epoch=steps, validation_data=val_ds, callbacks=cbs,
                   verbose=c["verbose"])
    seconds = time.perf_counter() - start
    bridge.export_portable(qat, run.path / "portable.npz", c["model"], c["k"], c["use_ternary"])
    arrays_, meta = portable.read(run.path / "portable.npz")
    model = portable.to_tfsnn(arrays_, meta)
    model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    runs.atomic_save_model(model, run.model)
    x = data.preprocess(c["dataset"], xte, False).numpy()
    tfmot_pred = np_logits(qat, x).argmax(1)
    tfsnn_pred = model.predict(x, batch_size=500, verbose=0).argmax(1)
    results = dict(test_accuracy=float(np.mean(tfsnn_pred == yte)),
                   tfmot_test_accuracy=float(np.mean(tfmot_pred == yte)),
                   tfmot_vs_tfsnn_disagreements=int(np.sum(tfmot_pred != tfsnn_pred)),
                   test_examples=int(len(xte)), train_examples=int(len(xtr)),
                   epochs=c["epochs"], seconds_per_epoch=seconds / max(len(hist.epoch), 1),
                   seconds_total=seconds, model=c["model"], quantized=True, k=c["k"],
                   use_ternary=c["use_ternary"], qat_backend="tfmot")
    runs.atomic_write_json(run.results, results)
    return results
