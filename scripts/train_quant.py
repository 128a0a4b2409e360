#!/usr/bin/env python
"""Train (or evaluate) the ternary-weight, k-level-activation ANN of the ALL_INT_SNN method.

  python scripts/train_quant.py --k 0 --mode training           # Fashion-MNIST LeNet, 5 epochs
  python scripts/train_quant.py --k 0 --mode inference          # test accuracy of that run
  python scripts/train_quant.py --k 1 --dataset cifar10 --epochs 200 --mode training

Outputs go to --run_dir (default logs/quant_<dataset>_k<k>[_ternary]): flags.json,
checkpoint/ (every epoch), model.keras, history.csv, tb/ (TensorBoard), results.json.
"""
import os
import sys

from absl import app, flags

import run_flags  # scripts/run_flags.py
from tfsnn.data import describe  # the dataset registry (imports TensorFlow; tf.keras stays lazy)

FLAGS = flags.FLAGS
flags.DEFINE_integer("k", 0, "Fractional bits of the hidden activations (step 2^-k), >= 0. "
                     "Use the same k for spiking inference.")
flags.DEFINE_enum("mode", "training", ["training", "inference"],
                  "training: train and save the model; inference: test accuracy of --run_dir's model.")
flags.DEFINE_bool("use_ternary", True, "Ternary {-1,0,1} kernels for every conv but the first.")
flags.DEFINE_string("dataset", "fashion_mnist", f"{describe('quant')}: the dataset and the "
                    "model that follows it.")
flags.DEFINE_string("model", None, "Architecture: all_int_lenet / all_int_vgg (the ALL_INT "
                    "layout) or a plain-Keras zoo model through tfsnn.quantize_model: zoo_mlp, zoo_vgg, "
                    "zoo_resnet8, zoo_resnet20; default: the dataset's (all_int_lenet / all_int_vgg).")
flags.DEFINE_bool("full_precision", False, "Train the full-precision twin (no quantizers) instead.")
flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate (initial value of the schedule).")
flags.DEFINE_enum("lr_schedule", "cosine", ["constant", "cosine"],
                  "Learning-rate schedule: constant, or cosine decay to 0 over --epochs.")
run_flags.define(
    dict(epochs=5, batch_size=200, resume=False, overwrite=False, max_train_examples=0,
         max_test_examples=0, validation_examples=5000, seed=0, strategy="default",
         tensorboard=True),
    {"run_dir": "default logs/quant_<dataset>_k<k>[_ternary], or logs/fp_<dataset> with "
                "--full_precision"})
flags.DEFINE_enum("qat_backend", "tfsnn", ["tfsnn", "tfmot"],
                  "tfsnn: Keras 3 layers; tfmot: tensorflow-model-optimization under Keras 2 "
                  "(needs `pip install tfsnn[tfmot]`; sets TF_USE_LEGACY_KERAS=1 itself), then "
                  "rebuilt as a tfsnn model in --run_dir.")

# Flags whose value is validated by tfsnn (absl only checks types and enums).
CONFIG_FLAGS = ("k", "model", "mode",
                "use_ternary", "dataset", "full_precision", "epochs", "batch_size",
                "learning_rate", "lr_schedule", "resume", "overwrite", "run_dir",
                "max_train_examples", "max_test_examples", "validation_examples", "seed",
                "strategy", "tensorboard", "qat_backend")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if FLAGS.qat_backend == "tfmot":  # must precede the first TensorFlow import
        os.environ["TF_USE_LEGACY_KERAS"] = "1"
    from tfsnn.training import quant
    config = {name: FLAGS[name].value for name in CONFIG_FLAGS
              if FLAGS[name].present or FLAGS.mode == "training"}

    def work():
        if FLAGS.mode == "training":
            c = quant.resolve(config)
            results = quant.train(c)
            if c["qat_backend"] == "tfmot":
                print(f"tfmot model test_accuracy={results['tfmot_test_accuracy']:.4f}; rebuilt "
                      f"tfsnn model disagrees on {results['tfmot_vs_tfsnn_disagreements']} images")
            if results.get("warning"):
                print(f"warning: {results['warning']}", file=sys.stderr)
            print(quant.summary_line(c, results))
        else:
            c = quant.resolve(config)
            results = quant.infer(config)
            print(f"test_accuracy={results['test_accuracy']:.4f} "
                  f"({results['test_examples']} images) run_dir={c['run_dir']}")
    run_flags.guarded(work)


if __name__ == "__main__":
    app.run(main)
