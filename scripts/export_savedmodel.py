#!/usr/bin/env python
"""Export a trained quantized ANN and its converted integer SNN as TensorFlow SavedModels.

  python scripts/export_savedmodel.py --run_dir logs/quant_fashion_mnist_k0_ternary
  saved_model_cli show --all --dir logs/quant_fashion_mnist_k0_ternary/export/snn

Writes ``<out_dir>/ann`` (``serving_default``: images -> logits, class) and ``<out_dir>/snn``
(``serving_default`` and ``spike_stats``: images -> per-layer +1/-1 spike counts and SOPs per
step; attributes ``timesteps``, ``k``, ``use_int``, ``layer_names``). Each export appears only
when complete. ``--out_dir`` defaults to ``<run_dir>/export``.
"""
from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("run_dir", None, "Run directory of scripts/train_quant.py holding model.keras.")
flags.DEFINE_string("out_dir", None, "Where to write ann/ and snn/ (default <run_dir>/export).")
flags.DEFINE_bool("use_int", True, "Integer SNN (int32 kernels, thresholds, membranes).")
flags.DEFINE_integer("timesteps", None, "SNN time steps; default tfsnn.conversion.default_timesteps(k).")


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
    import keras

    from tfsnn import conversion as convert, export
    out = Path(FLAGS.out_dir or Path(FLAGS.run_dir) / "export")
    ann = keras.models.load_model(model_path)
    try:
        snn = convert.convert(ann, use_int=FLAGS.use_int, timesteps=FLAGS.timesteps)
    except ValueError as e:
        raise app.UsageError(f"--run_dir: the model cannot be converted: {e}")
    print("ANN SavedModel:", export.export_ann(ann, out / "ann"))
    print("SNN SavedModel:", export.export_snn(snn, out / "snn"))
    print(f"inspect with: saved_model_cli show --all --dir {out / 'snn'}")


if __name__ == "__main__":
    app.run(main)
