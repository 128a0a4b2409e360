#!/usr/bin/env python
"""Export a trained quantized ANN and its converted integer SNN as TensorFlow SavedModels.

  python scripts/export_savedmodel.py --run_dir logs/quant_fashion_mnist_k0_ternary
  saved_model_cli show --all --dir logs/quant_fashion_mnist_k0_ternary/export/snn

Works for run dirs of ALL_INT models and of zoo models (``quantize_model`` twins). Writes
``<out_dir>/ann`` (``serving_default``: float32 images -> logits, class; ``serving_uint8``: the
dataset's uint8 pixels, preprocessed inside the graph as in training; ``metadata``) and
``<out_dir>/snn`` (the same plus ``spike_stats``: per-layer +1/-1 spike counts and SOPs per step,
per-image counts; attributes ``timesteps``, ``k``, ``use_int``, ``layer_names``, ...), as
``tfsnn.export.savedmodel`` documents: they run under ``saved_model_cli run`` / TF Serving and
without tfsnn. The dataset is the run's (``flags.json``). Each export appears only when
complete. ``--out_dir`` defaults to ``<run_dir>/export``. An existing ``ann``/``snn`` in
``--out_dir`` is replaced only with ``--overwrite``, and only if it is a SavedModel (so
``--out_dir <run_dir>`` cannot replace spiking_inference.py's ``<run_dir>/snn/`` outputs); the run
directory is locked while the export runs (``tfsnn.runs``).

``--formats savedmodel,tflite,onnx`` also writes ``<out_dir>/{ann,snn}.tflite`` (LiteRT, builtin
ops, int8 kernels; ``tfsnn.export.to_tflite``) and ``<out_dir>/{ann,snn}.onnx``
(``tfsnn.export.to_onnx``), each with a ``.json`` sidecar; the SNN files run the integer SNN for
a fixed T (``--timesteps``) and also output per-image spike and SOP counts.
"""
from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("run_dir", None, "Run directory of scripts/train_quant.py holding model.keras.")
flags.DEFINE_string("out_dir", None, "Where to write ann/ and snn/ (default <run_dir>/export).")
flags.DEFINE_bool("use_int", True, "Integer SNN (int32 kernels, thresholds, membranes).")
flags.DEFINE_integer("timesteps", None, "SNN time steps; default tfsnn.conversion.default_timesteps(k).")
flags.DEFINE_bool("overwrite", False, "Replace SavedModels already in --out_dir.")
flags.DEFINE_integer("chunk_size", 256,
                     "Images per chunk inside the exported SavedModels (bounds peak memory).")
flags.DEFINE_list("formats", ["savedmodel"], "Comma list of savedmodel,tflite,onnx: SavedModels "
                  "ann/ snn/, LiteRT files ann.tflite snn.tflite (extra litert), ONNX files "
                  "ann.onnx snn.onnx (extra onnx); the SNN files run the integer SNN for T steps.")
FORMATS = ("savedmodel", "tflite", "onnx")


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


def check_formats(formats, use_int):
    """``--formats`` as a list of ``FORMATS`` (``UsageError`` naming the flag otherwise)."""
    formats = [f.strip().lower() for f in formats if f.strip()]
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise app.UsageError(f"--formats={','.join(formats)}: accepted values are "
                             f"{','.join(FORMATS)} (comma separated)")
    if not use_int and {"tflite", "onnx"} & set(formats):
        raise app.UsageError("--formats tflite / onnx export the integer SNN: drop --nouse_int")
    return formats


def check_files(out, formats, overwrite):
    """Refuse to replace ``<out>/{ann,snn}.{tflite,onnx}`` without ``--overwrite``; ``out`` must
    be writable."""
    from tfsnn import runs
    try:
        runs.check_writable(out, "out_dir")
    except runs.RunError as e:
        raise app.UsageError(str(e))
    for fmt in set(formats) - {"savedmodel"}:
        for name in ("ann", "snn"):
            p = out / f"{name}.{fmt}"
            if p.exists() and not overwrite:
                raise app.UsageError(f"--out_dir {out}: {p} exists; pass --overwrite to replace it")


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
    if FLAGS.chunk_size < 1:
        raise app.UsageError(f"--chunk_size={FLAGS.chunk_size}: must be >= 1")
    import run_flags  # scripts/run_flags.py
    from tfsnn import conversion as convert, export, runs
    out = Path(FLAGS.out_dir or Path(FLAGS.run_dir) / "export")
    formats = check_formats(FLAGS.formats, FLAGS.use_int)
    if "savedmodel" in formats:
        check_out_dir(out, FLAGS.overwrite)
    check_files(out, formats, FLAGS.overwrite)

    def work():
        with runs.RunDir(FLAGS.run_dir).lock():
            ann = runs.load_model(model_path)
            try:
                snn = convert.convert(ann, use_int=FLAGS.use_int, timesteps=FLAGS.timesteps)
            except ValueError as e:
                raise app.UsageError(f"--run_dir: the model cannot be converted: {e}")
            dataset = (runs.RunDir(FLAGS.run_dir).saved_flags() or {}).get("dataset")
            opts = {"chunk_size": FLAGS.chunk_size, "dataset": dataset}
            if "savedmodel" in formats:
                print("ANN SavedModel:", export.export_ann(ann, out / "ann", **opts))
                print("SNN SavedModel:", export.export_snn(snn, out / "snn", **opts))
            for fmt, write in (("tflite", export.to_tflite), ("onnx", export.to_onnx)):
                if fmt in formats:
                    print(f"ANN {fmt}:", write(ann, out / f"ann.{fmt}"))
                    print(f"SNN {fmt}:", write(snn, out / f"snn.{fmt}"))
        if "savedmodel" in formats:
            print(f"inspect with: saved_model_cli show --all --dir {out / 'snn'}")
    run_flags.guarded(work)


if __name__ == "__main__":
    app.run(main)
