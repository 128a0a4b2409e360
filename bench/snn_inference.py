#!/usr/bin/env python
"""Benchmark: integer-SNN simulation time vs the quantized ANN's forward time, in one run.

  python bench/snn_inference.py --run_dir logs/q_k0          # a trained model (flags.json)
  python bench/snn_inference.py                              # random LeNet, BN calibrated on data

Prints, measured side by side (interleaved repeats, median):

* ``ann_ms_per_image``: the quantized Keras ANN's forward time per image (tf.function, batch B);
* ``snn_ms_per_image_step``: SNN simulation time per image per time step, including the spike
  and SOP accounting of ``tfsnn.simulate`` (``snn_model_*``: the Keras SNN model alone);
* ``ratio`` = snn_ms_per_image_step / ann_ms_per_image (target <= 1.5);
* ``snn_images_per_s``: images per second for the full T steps.
"""
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("run_dir", None, "Run dir with model.keras (default: a random calibrated LeNet).")
flags.DEFINE_integer("k", 0, "k of the random LeNet (ignored with --run_dir).")
flags.DEFINE_string("dataset", "fashion_mnist", "Test images to run on (mnist | fashion_mnist).")
flags.DEFINE_integer("timesteps", None, "T (default 32 * 2^k).")
flags.DEFINE_integer("batch_size", 200, "Images per batch.")
flags.DEFINE_integer("batches", 5, "Distinct batches per repeat.")
flags.DEFINE_integer("repeats", 5, "Interleaved repeats; the median is reported.")
flags.DEFINE_bool("use_int", True, "Integer mode.")


def _random_lenet(k, x):
    import keras
    import numpy as np
    from tfsnn.models.all_int import all_int_model
    keras.utils.set_random_seed(0)
    m = all_int_model("all_int_lenet", k=k)
    rng = np.random.default_rng(0)
    h = x
    for i in range(1, 6):
        z = np.asarray(m.get_layer(f"conv{i}")(h)).reshape(-1, m.get_layer(f"conv{i}").filters)
        c = z.shape[1]
        act = m.get_layer(f"act{i}")
        act.bn.set_weights([rng.uniform(0.5, 1.5, c), rng.uniform(-0.5, 1.0, c), z.mean(0),
                            z.var(0) + 1e-3])
        h = act(np.asarray(m.get_layer(f"conv{i}")(h)), training=False)
    return m


def main(argv):
    del argv
    for name in ("batch_size", "batches", "repeats"):
        if FLAGS[name].value < 1:
            raise app.UsageError(f"--{name} must be >= 1, got {FLAGS[name].value}")
    if FLAGS.timesteps is not None and FLAGS.timesteps < 1:
        raise app.UsageError(f"--timesteps must be >= 1, got {FLAGS.timesteps}")
    import keras
    import numpy as np
    import tensorflow as tf
    from tfsnn import conversion as cv, data
    from tfsnn import simulation as sim

    n = FLAGS.batch_size * FLAGS.batches
    (x_u8, _), = data.load(FLAGS.dataset, splits=("test",))
    x = data.preprocess(FLAGS.dataset, x_u8[:n], training=False).numpy()
    if FLAGS.run_dir:
        model = keras.saving.load_model(os.path.join(FLAGS.run_dir, "model.keras"), compile=False)
    else:
        model = _random_lenet(FLAGS.k, x[:500])
    k = cv.parse_model(model)[2]
    t_steps = FLAGS.timesteps or cv.default_timesteps(k)
    snn = cv.convert(model, use_int=FLAGS.use_int, timesteps=t_steps)
    run_sim = sim.make_batch_fn(snn)
    ann_fn = tf.function(lambda b: model(b, training=False))
    snn_fn = tf.function(lambda b: snn(b))
    batches = [tf.constant(x[i:i + FLAGS.batch_size]) for i in range(0, n, FLAGS.batch_size)]

    def timed(fn):
        t0 = time.perf_counter()
        for b in batches:
            out = fn(b)
            tf.nest.map_structure(lambda t: t.numpy(), out)
        return time.perf_counter() - t0

    for fn in (ann_fn, run_sim, snn_fn):  # trace + warm up
        timed(fn)
    t_ann, t_sim, t_snn = [], [], []
    for _ in range(FLAGS.repeats):
        t_ann.append(timed(ann_fn))
        t_sim.append(timed(run_sim))
        t_snn.append(timed(snn_fn))
    ann = float(np.median(t_ann)) / n
    simt = float(np.median(t_sim)) / n
    snnt = float(np.median(t_snn)) / n
    res = {"model": FLAGS.run_dir or f"random all_int_lenet k={k}", "k": k, "timesteps": t_steps,
           "use_int": FLAGS.use_int, "batch_size": FLAGS.batch_size, "images": n,
           "ann_ms_per_image": ann * 1e3,
           "snn_ms_per_image_step": simt / t_steps * 1e3,
           "ratio": simt / t_steps / ann,
           "snn_images_per_s": 1.0 / simt,
           "snn_model_ms_per_image_step": snnt / t_steps * 1e3,
           "snn_model_ratio": snnt / t_steps / ann,
           "ann_images_per_s": 1.0 / ann,
           "cpu_count": os.cpu_count()}
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    app.run(main)
