#!/usr/bin/env python
"""Train a spiking network directly: spike-based BP (Lee et al.) or hybrid conversion + STDB
fine-tuning (Rathi et al.). Spec: hybrid_and_spike_bp.md.

  python scripts/train_snn.py --method spike_bp --dataset fashion_mnist --timesteps 20 --epochs 2
  python scripts/train_snn.py --method hybrid --model vgg16 --dataset cifar10 --timesteps 100 \\
      --ann_epochs 300 --epochs 20
  python scripts/train_snn.py ... --resume          # continue from the last finished epoch

Outputs go to --run_dir (default logs/snn_<method>_<model>_<dataset>_T<timesteps>): flags.json,
checkpoint/ (every epoch), model.keras, history.csv, tb/ (TensorBoard), results.json; hybrid
runs also ann.keras and conversion.json. Run-dir plumbing is tfsnn.runs (shared with
train_quant.py).
"""
from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_enum("method", "spike_bp", ["spike_bp", "hybrid"],
                  "spike_bp: Lee et al. from scratch; hybrid: ANN -> threshold balancing -> STDB.")
flags.DEFINE_string("model", None, "Architecture (tfsnn.snn_models.names()); default "
                    "spike_bp_lenet / spike_bp_vgg9 (spike_bp), vgg5 / vgg16 (hybrid, "
                    "MNISTs / CIFAR-10).")
flags.DEFINE_string("dataset", "fashion_mnist", "mnist | fashion_mnist | cifar10.")
flags.DEFINE_integer("timesteps", 100, "Simulation time steps T per example.")
flags.DEFINE_integer("epochs", 5, "Total SNN training epochs (including those before --resume).")
flags.DEFINE_integer("batch_size", 32, "Batch size.")
flags.DEFINE_float("learning_rate", None, "Initial learning rate (default: the original "
                   "script's: 0.0085 / 0.0033 / 0.0025 SGD for spike_bp, 1e-4 Adam for hybrid).")
flags.DEFINE_bool("resume", False, "Continue from the run dir's last checkpoint.")
flags.DEFINE_bool("overwrite", False, "Start anew in a run dir that already holds a run.")
flags.DEFINE_string("run_dir", None, "Run directory (default "
                    "logs/snn_<method>_<model>_<dataset>_T<timesteps>).")
flags.DEFINE_integer("max_train_examples", 0, "Train on the first N training images (0 = all).")
flags.DEFINE_integer("max_test_examples", 0, "Test on the first N test images (0 = all).")
flags.DEFINE_integer("validation_examples", 5000, "Images held out from the end of the training "
                     "split for per-epoch validation (0 = none; at most a fifth of the split).")
flags.DEFINE_integer("seed", 0, "Seed of initialization, shuffling and spike trains.")
flags.DEFINE_enum("strategy", "default", ["default", "mirrored", "multi_worker"],
                  "tf.distribute strategy (multi_worker reads TF_CONFIG).")
flags.DEFINE_bool("tensorboard", True, "Write TensorBoard events under <run_dir>/tb.")
flags.DEFINE_float("leak", None, "Neuron leak factor in (0, 1] (default: 1 hybrid, 0.99 spike_bp).")
flags.DEFINE_string("surrogate", None, "Surrogate name (tfsnn.surrogates.names(); default "
                    "stdb for hybrid, lee for spike_bp).")
flags.DEFINE_list("fc_widths", None, "Override the hidden FC widths, e.g. 512,512.")
flags.DEFINE_integer("ann_epochs", 10, "hybrid: ANN training epochs (the original: 300).")
flags.DEFINE_float("ann_learning_rate", 1e-2, "hybrid: ANN SGD learning rate.")
flags.DEFINE_float("scaling_factor", 0.7, "hybrid: threshold scaling after balancing.")
flags.DEFINE_integer("balance_examples", 512, "hybrid: training images used for balancing.")
flags.DEFINE_integer("balance_timesteps", None, "hybrid: steps simulated for balancing "
                     "(default --timesteps; the original used 1000).")
flags.DEFINE_float("weight_decay", 5e-4, "L2 weight decay (coupled, as in PyTorch).")

CONFIG_FLAGS = ("method", "model", "dataset", "timesteps", "epochs", "batch_size",
                "learning_rate", "resume", "overwrite", "run_dir", "max_train_examples",
                "max_test_examples", "validation_examples", "seed", "strategy", "tensorboard",
                "leak", "surrogate", "fc_widths", "ann_epochs", "ann_learning_rate",
                "scaling_factor", "balance_examples", "balance_timesteps", "weight_decay")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from tfsnn import runs
    from tfsnn.training import snn
    config = {name: FLAGS[name].value for name in CONFIG_FLAGS}
    if config["fc_widths"] is not None:
        try:
            config["fc_widths"] = [int(w) for w in config["fc_widths"]]
        except ValueError:
            raise app.UsageError(f"--fc_widths must be integers, got {FLAGS.fc_widths}")
    try:
        c = snn.resolve(config)
        results = snn.train(c)
    except runs.ConfigError as e:
        raise app.UsageError(str(e))
    print(snn.summary_line(c, results))


if __name__ == "__main__":
    app.run(main)
