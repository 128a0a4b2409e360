#!/usr/bin/env python
"""Spiking inference of a trained quantized ANN converted to the integer SNN (ALL_INT_SNN).

  python scripts/train_quant.py --k 0 --mode training --run_dir logs/q_k0
  python scripts/spiking_inference.py --run_dir logs/q_k0             # k, ternary from flags.json

Reads ``<run_dir>/model.keras`` (and ``flags.json`` for the defaults of --k, --use_ternary and
--dataset), converts it (``tfsnn.convert``: an ALL_INT model or any ``--model`` zoo twin), runs the test split for --timesteps steps
(``tfsnn.simulate``) and writes into ``<run_dir>/snn/``:

* the six per-(batch, step) stat files of the original: accuracy.txt, spike_num.txt,
  spike_collect.txt, sop_num.txt, abs_spike.txt, sum_spike.txt (raw counts summed over each
  batch; meaning in ``snn/README.md`` and ``tfsnn.accounting``);
* ``summary.json``: ann_accuracy, snn_accuracy (last step), accuracy_per_step,
  agreement_per_step (fraction of images whose SNN prediction equals the ANN's), disagreements,
  equal_from_step, accuracy_equal_from_step, converged_step, timesteps, k, use_int,
  spikes_per_image, sops_per_image, ann_macs_per_image, ...;
* ``report.md`` / ``report.json``: the per-layer table (neurons, spikes/image, firing rate,
  SOPs/image, ANN MACs/image, SOP/MAC, energy per inference under each device model of
  ``tfsnn.energy``), also printed;
* PNG figures (150 dpi) with SVG and PDF copies;
* ``tb/``: TensorBoard scalars, histograms and the per-layer table over the time step.

The outputs are written all or nothing: into a staging directory that replaces ``<run_dir>/snn``
only once complete (a failure leaves the previous ``snn/`` untouched); ``<run_dir>/snn`` must be
writable, which is checked before the simulation starts.

--timesteps default: ``32 * 2^k`` (levels scale with 2^k; a neuron reaches its level at one
spike per step, so this covers ANN activations up to ~31 plus settling). The run checks it:
``converged_step`` is the first step from which no layer spikes on any image (the network is
then stationary and equals the ANN exactly); a warning is logged if T was not enough.
"""
import json
import math
import sys
import time

from absl import app, flags, logging

import run_flags  # scripts/run_flags.py

from tfsnn import data  # the dataset registry, for --dataset

FLAGS = flags.FLAGS
flags.DEFINE_string("run_dir", None, "Run directory of scripts/train_quant.py holding model.keras.")
flags.DEFINE_integer("k", None, "Fractional bits of the hidden activations; default: the run's "
                     "flags.json / the model's. Must equal the k the model was trained with.")
flags.DEFINE_bool("use_ternary", None, "Whether the model has ternary hidden kernels; default: the "
                  "run's. Must match the trained model (ternarizing FP weights after training "
                  "breaks equivalence).")
flags.DEFINE_bool("use_int", True, "Integer mode: int32 kernels, thresholds and membranes.")
flags.DEFINE_integer("timesteps", None, "Time steps T; default 32 * 2^k (see the module doc).")
flags.DEFINE_float("noise_ratio", 0.0, "Multiplicative input noise r: x (1 + r (U - 1/2)), >= 0.")
flags.DEFINE_integer("noise_seed", 0, "Seed of the input noise.")
flags.DEFINE_integer("batch_size", 200, "Images per batch, >= 1.")
flags.DEFINE_integer("max_test_examples", 0, "Use the first N test images (0 = all).")
flags.DEFINE_string("dataset", None, f"{' | '.join(data.names('quant'))}; default: the run's.")
flags.DEFINE_bool("tensorboard", True, "Write TensorBoard views (per-step scalars, count "
                  "histograms, rasters) under <run_dir>/snn/tb.")

RASTER_IMAGES = 4  # test images whose per-step spikes are kept for rasters and histograms

README = """# Spiking inference outputs (tfsnn, ALL_INT_SNN)

Per-(batch, step) stat files: one integer per line, line `b*T + t` for batch b and step t
(batch-major, T = timesteps), summed over the images of batch b. H = the hidden spiking layers
(conv2..), encoder excluded, as in the original code.

| file | value at (batch b, step t) |
|---|---|
| accuracy.txt | correct predictions (argmax of the output at step t) in batch b (a count) |
| spike_num.txt | cumulative spikes of H up to step t, +1 and -1 alike |
| spike_collect.txt | cumulative net spikes of H (#(+1) - #(-1)); 2^k x sum of ANN activations at convergence |
| sop_num.txt | cumulative synaptic operations up to step t: every event x the synapses it reaches (exact fan-out, border effects and zero ternary weights included), for conv2.. (encoder events counted once each) and the output layer (last hidden events x classes) |
| abs_spike.txt | spikes of H at step t only, +1 and -1 alike |
| sum_spike.txt | net spikes of H at step t only |

Accuracy(t) = sum_b accuracy.txt[b*T + t] / N. summary.json holds the per-image figures
(spikes_per_image, sops_per_image, ann_macs_per_image), accuracy_per_step, disagreements with the
quantized ANN and equal_from_step (first step from which every SNN prediction equals the ANN's).
"""


def _fail(flag, msg):
    raise app.UsageError(f"--{flag}: {msg}")


def validate():
    """Check flags and the run directory before any work; returns (run flags dict, run paths)."""
    from tfsnn import runs
    if not FLAGS.run_dir:
        _fail("run_dir", "is required (a run directory of scripts/train_quant.py)")
    run = runs.RunDir(FLAGS.run_dir)
    if not run.model.is_file():
        _fail("run_dir", f"{run.model} does not exist; train first with scripts/train_quant.py "
              f"--run_dir {FLAGS.run_dir}")
    saved = run.saved_flags() or {}
    if FLAGS.k is not None and FLAGS.k < 0:
        _fail("k", f"must be >= 0, got {FLAGS.k}")
    if FLAGS.k is not None and "k" in saved and saved["k"] != FLAGS.k:
        _fail("k", f"{FLAGS.k} differs from the k={saved['k']} the model in {run.path} was "
              "trained with; the SNN thresholds need the training k")
    if (FLAGS.use_ternary is not None and "use_ternary" in saved
            and saved["use_ternary"] != FLAGS.use_ternary):
        _fail("use_ternary", f"{FLAGS.use_ternary} differs from the trained model's "
              f"use_ternary={saved['use_ternary']}")
    if saved.get("full_precision"):
        _fail("run_dir", f"{run.path} holds a full-precision model; spiking inference needs the "
              "quantized one (train without --full_precision)")
    if FLAGS.timesteps is not None and FLAGS.timesteps < 1:
        _fail("timesteps", f"must be >= 1, got {FLAGS.timesteps}")
    if not (math.isfinite(FLAGS.noise_ratio) and FLAGS.noise_ratio >= 0):
        _fail("noise_ratio", f"must be a finite number >= 0, got {FLAGS.noise_ratio}")
    if FLAGS.batch_size < 1:
        _fail("batch_size", f"must be >= 1, got {FLAGS.batch_size}")
    if FLAGS.max_test_examples < 0:
        _fail("max_test_examples", f"must be >= 0 (0 = all), got {FLAGS.max_test_examples}")
    dataset = FLAGS.dataset or saved.get("dataset") or "fashion_mnist"
    try:
        data.check_name(dataset, "quant")
    except ValueError as e:
        _fail("dataset", str(e))
    # the outputs must be writable: checked before the simulation, not after it
    if (run.path / "snn").exists() and not (run.path / "snn").is_dir():
        raise runs.RunError(f"--run_dir {run.path / 'snn'}: exists and is not a directory")
    runs.check_writable(run.path, "run_dir")
    return saved, run, dataset


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    run_flags.guarded(run_inference)


def run_inference():
    saved, run, dataset = validate()
    import numpy as np
    from tfsnn import conversion as cv, runs
    from tfsnn import simulation as sim

    from tfsnn.conversion.integer import model_k_of
    model = runs.load_model(run.model)
    try:  # any quantized model convert takes: ALL_INT or a quantize_model twin (zoo runs)
        model_k = model_k_of(model)
    except ValueError as e:
        _fail("run_dir", f"{run.model}: {e}")
    k = model_k if FLAGS.k is None else FLAGS.k
    if k != model_k:
        _fail("k", f"{k} differs from the model's hidden quantizers (k={model_k})")
    # hidden synapses: every quantized conv / dense but the first (it reads the analog image)
    # and the output layer (full precision in the ALL_INT layout)
    syns = [l for l in model.layers[:-1] if hasattr(l, "kernel_quantizer")][1:]
    ternary = all(l.kernel_quantizer is not None for l in syns)
    if FLAGS.use_ternary is not None and FLAGS.use_ternary != ternary:
        _fail("use_ternary", f"{FLAGS.use_ternary} but the model's hidden kernels are "
              f"{'ternary' if ternary else 'full precision'}")
    if FLAGS.use_int and not ternary:
        _fail("use_int", "integer mode needs ternary hidden kernels; this model is full precision "
              "(use --nouse_int)")
    t_steps = FLAGS.timesteps or cv.default_timesteps(k)

    (x_u8, y), = data.load(dataset, splits=("test",))
    n = len(x_u8) if FLAGS.max_test_examples == 0 else min(len(x_u8), FLAGS.max_test_examples)
    x = np.concatenate([
        data.preprocess(dataset, x_u8[i:min(i + 1000, n)], False, "quant").numpy()
        for i in range(0, n, 1000)])
    y = y[:n]
    logging.info("converting %s (k=%d, use_int=%s, T=%d)", run.model, k, FLAGS.use_int, t_steps)
    t0 = time.time()
    try:
        snn = cv.convert(model, k=k, use_int=FLAGS.use_int, timesteps=t_steps)
    except ValueError as e:
        _fail("run_dir", f"{run.model}: {e}")
    res = sim.simulate(snn, x, y, batch_size=FLAGS.batch_size, noise_ratio=FLAGS.noise_ratio,
                       seed=FLAGS.noise_seed, ann=model, progress=True, warn=False)
    seconds = time.time() - t0

    # every output is written into a staging dir that replaces <run_dir>/snn only when complete
    with runs.staged_dir(run.path / "snn") as out_dir:
        summary, macs, sops = write_outputs(out_dir, res, snn, x, dataset, k, ternary, t_steps,
                                            seconds)
    for problem in res.convergence_problems():
        logging.warning("%s (--timesteps)", problem)
    print(json.dumps({key: summary[key] for key in (
        "ann_accuracy", "snn_accuracy", "disagreements", "equal_from_step",
        "accuracy_equal_from_step", "converged_step", "timesteps", "k", "use_int")}))
    print(f"sops/image={sops['total']:.0f} ann_macs/image={macs['total']} "
          f"spikes/image={summary['spikes_per_image']['total']:.0f} -> {run.path / 'snn'}")


def write_outputs(out_dir, res, snn, x, dataset, k, ternary, t_steps, seconds):
    """Write the stat files, README, summary.json, PNGs and TensorBoard views into ``out_dir``;
    returns ``(summary, ann MACs, SOPs per image)``."""
    from tfsnn import accounting, report, runs
    from tfsnn.viz import tensorboard as callbacks
    series = res.stat_series()
    for name, text in accounting.stat_file_texts(series).items():
        runs.atomic_write_text(out_dir / name, text)
    runs.atomic_write_text(out_dir / "README.md", README)
    acc = res.accuracy_per_step
    ann_acc = res.ann_accuracy
    # first step from which the SNN accuracy equals the ANN's (the paper's "4 / 8 steps")
    acc_equal_from = report.accuracy_equal_from_step(acc, ann_acc)
    macs = res.ann_macs
    rep = report.write(out_dir, res, macs, snn=snn, dataset=dataset)  # report.md / report.json
    print(rep.text())
    sops = res.sops_per_image()
    summary = {
        "dataset": dataset, "n_images": res.n_images, "k": k, "use_int": FLAGS.use_int,
        "use_ternary": ternary, "timesteps": t_steps, "noise_ratio": FLAGS.noise_ratio,
        "timesteps_rule": "default 32 * 2^k" if FLAGS.timesteps is None else "--timesteps",
        "ann_accuracy": ann_acc, "snn_accuracy": res.accuracy,
        "accuracy_per_step": [float(a) for a in acc],
        "agreement_per_step": [float(a) for a in res.agreement_per_step],
        "disagreements": res.disagreements, "equal_from_step": res.equal_from_step,
        "accuracy_equal_from_step": acc_equal_from,
        "converged_step": res.converged_step, "converged": res.converged,
        "saturated_neurons": res.saturated,
        "convergence_problems": res.convergence_problems(),
        "spikes_per_image": res.spikes_per_image(), "sops_per_image": sops,
        "ann_macs_per_image": macs,
        "sops_over_ann_macs": sops["total"] / macs["total_hidden_and_output"],
        "energy_J_per_image": rep.totals["energy_J"],
        "ann_energy_J_per_image": rep.totals["ann_energy_J"],
        "spike_rates_per_step": {
            name: [float(v) for v in (res.pos + res.neg)[:, i].sum(0) / res.n_images]
            for i, name in enumerate(res.layer_names)},
        "seconds": seconds,
        "steps_note": "step t is 0-based; equal_from_step is the first t from which SNN and ANN "
                      "predictions agree on every image",
    }
    from tfsnn.simulation import spike_trains
    trains = spike_trains(snn, x[:RASTER_IMAGES], t_steps)
    summary["plots"] = [p.name for p in callbacks.save_simulation_plots(
        out_dir, res, trains, ann_macs=macs["total_hidden_and_output"], report=rep,
        dataset=dataset)]
    runs.atomic_write_json(out_dir / "summary.json", summary)
    if FLAGS.tensorboard:
        callbacks.log_simulation(out_dir / "tb", res, trains, report=rep, dataset=dataset)
    return summary, macs, sops


if __name__ == "__main__":
    sys.exit(app.run(main))
