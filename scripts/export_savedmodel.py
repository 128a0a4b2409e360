#!/usr/bin/env python
"""Export a trained quantized ANN and its converted integer SNN as TensorFlow SavedModels.

  python scripts/export_savedmodel.py --run_dir logs/quant_fashion_mnist_k0_ternary
  saved_model_cli show --all --dir logs/quant_fashion_mnist_k0_ternary/export/snn

Writes ``<out_dir>/ann`` (``serving_default``: images -> logits, class) and ``<out_dir>/snn``
(``serving_default`` and ``spike_stats``: images -> per-layer +1/-1 spike counts and SOPs per
step; attributes ``timesteps``, ``k``, ``use_int``, ``layer_names``). Each export appears only
when complete. ``--out_dir`` defaults to ``<run_dir>/export``. An existing ``ann``/``snn`` in
``--out_dir`` is replaced only with ``--overwrite``, and only if it is a SavedModel (so
``--out_dir <run_dir>`` cannot replace spiking_inference.py's ``<run_dir>/snn/`` outputs); the run
directory is locked while the export runs (``tfsnn.runs``).
"""
from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("run_dir", None, "Run directory of scripts/train_quant.py holding model.keras.")
flags.DEFINE_string("out_dir", None, "Where to write ann/ and snn/ (default <run_dir>/export).")
flags.DEFINE_bool("use_int", True, "Integer SNN (int32 kernels, thresholds, membranes).")
flags.DEFINE_integer("timesteps", None, "SNN time steps; default tfsnn.conversion.default_timesteps(k).")
flags.DEFINE_bool("overwrite", False, "Replace SavedModels already in --out_dir.")


def check_out_dir(out, overwrite):
    """Refuse (``UsageError`` naming --out_dir) to write over anything but an earlier export:
    ``out`` must be a directory or absent; ``out/ann`` and ``out/snn`` must be absent, or
    SavedModels and ``overwrite`` set. Also checks that ``out`` is writable."""
    from tfsnn import runs
    if out.exists() and not out.is_dir():
        raise app.UsageError(f"--out_dir {out}: exists and is not a directory")
    for name in ("ann", "snn"):
        p = out / name
        if not p.exists():
            continue
        if not (p / "saved_model.pb").is_file():
            raise app.UsageError(f"--out_dir {out}: {p} exists and is not a SavedModel (e.g. "
                                 "spiking_inference.py's outputs); choose another --out_dir")
        if not overwrite:
            raise app.UsageError(f"--out_dir {out}: {p} already holds a SavedModel; pass "
                                 "--overwrite to replace it")
    try:
        runs.check_writable(out, "out_dir")
    except runs.RunError as e:
        raise app.UsageError(str(e))


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from pathlib import Path

    if not FLAGS.run_dir:
        raise app.UsageError("--run_dir is required (a run directory of scripts/train_quant.py)")
    model_path = Path(FLAGS.run_dir) / "model.keras"
    if not model_path.is_file():
        raise app.UsageError(f"--run_dir: {model_path} does not exist; train first with "
                             "scripts/train_quant.py")
    if FLAGS.timesteps is not None and FLAGS.timesteps < 1:
        raise app.UsageError(f"--timesteps={FLAGS.timesteps}: must be >= 1")
    import run_flags  # scripts/run_flags.py
    from tfsnn import conversion as convert, export, runs
    out = Path(FLAGS.out_dir or Path(FLAGS.run_dir) / "export")
    check_out_dir(out, FLAGS.overwrite)

    def work():
        with runs.RunDir(FLAGS.run_dir).lock():
            ann = runs.load_model(model_path)
            try:
                snn = convert.convert(ann, use_int=FLAGS.use_int, timesteps=FLAGS.timesteps)
            except ValueError as e:
                raise app.UsageError(f"--run_dir: the model cannot be converted: {e}")
            print("ANN SavedModel:", export.export_ann(ann, out / "ann"))
            print("SNN SavedModel:", export.export_snn(snn, out / "snn"))
        print(f"inspect with: saved_model_cli show --all --dir {out / 'snn'}")
    run_flags.guarded(work)


if __name__ == "__main__":
    app.run(main)
