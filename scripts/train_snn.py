#!/usr/bin/env python
"""Train a spiking network directly, by one of five methods (specs hybrid_and_spike_bp.md and
iir_and_proxy.md):

  spike_bp            Lee et al.: spike-based BP with the leak-aware surrogate, from scratch
  hybrid              Rathi et al.: ANN -> threshold balancing -> STDB fine-tuning
  iir                 Fang et al.: IIR synapse filters (snn_mlp_1 / snn_mlp_2 / snn_conv_1)
  proxy               Kheradpisheh et al.: IF SNN forward, proxy-ANN gradient
  associative_memory  Fang et al.: 300-500-200-500-300 network restoring 10 binary patterns

  python scripts/train_snn.py --method spike_bp --timesteps 20 --epochs 2
  python scripts/train_snn.py --method hybrid --model vgg16 --dataset cifar10 --timesteps 100
  python scripts/train_snn.py --method iir --epochs 1
  python scripts/train_snn.py --method proxy --width 16 --epochs 2
  python scripts/train_snn.py --method associative_memory --epochs 10
  python scripts/train_snn.py ... --resume          # continue from the last finished epoch

Every option left unset takes the chosen method's default (the original code's, see the README
table); an option the method does not use is an error. Outputs go to --run_dir (default
logs/snn_<method>_..., logs/iir_..., logs/proxy_..., logs/associative_memory): flags.json,
checkpoint/ (every epoch; iir/associative_memory also best.keras, the best dev epoch, which
their test figures use), model.keras, history.csv, learning_curve.png (scripts/plot_history.py),
tb/, results.json, plus method extras
(hybrid: ann.keras, conversion.json; associative_memory: reconstructions.png). Run-dir
plumbing is tfsnn.runs (shared with train_quant.py).
"""
from absl import app, flags

import plot_history  # scripts/plot_history.py
import run_flags  # scripts/run_flags.py
from tfsnn import data  # the dataset registry, for --dataset / --model help

FLAGS = flags.FLAGS
_OTHER_FLAGS = set(FLAGS)  # absl's own; everything defined below is this script's
METHODS = ("spike_bp", "hybrid", "iir", "proxy", "associative_memory")
flags.DEFINE_enum("method", "spike_bp", list(METHODS), "Training method (see above).")
# Shared options (default None = the method's default).
flags.DEFINE_string("model", None, "Architecture; default: the dataset's (see --dataset). Others: "
                    "spike_bp resnet11; hybrid vgg9/11/13, resnet12/20/34; iir snn_mlp_2 / "
                    "snn_conv_1.")
flags.DEFINE_string("dataset", None, "Dataset (default fashion_mnist) and its default model, per "
                    "method: " + "; ".join(f"{m}: {data.describe(m)}" for m in METHODS[:3])
                    + f"; proxy: {' | '.join(data.names('proxy'))}.")
flags.DEFINE_integer("timesteps", None, "Time steps T per example (spike_bp/hybrid 100, iir 25, "
                     "proxy 15).")
run_flags.define({}, {
    "epochs": "spike_bp/hybrid 5, iir/proxy/associative_memory 100",
    "batch_size": "spike_bp/hybrid 32, iir 64, proxy 100, associative_memory 32",
    "run_dir": "default logs/snn_<method>_<model>_<dataset>_T<timesteps> for spike_bp/hybrid, "
               "logs/iir_..., logs/proxy_..., logs/associative_memory",
    "validation_examples": "spike_bp/hybrid 5000, iir 10000",
    "seed": "spike_bp/hybrid/associative_memory 0, iir 2, proxy 2020",
    "tensorboard": "default on"})
flags.DEFINE_float("learning_rate", None, "Initial learning rate (spike_bp SGD 0.0085/0.0033/"
                   "0.0025 by model, hybrid Adam 1e-4, iir 1e-4, proxy 1e-4, associative_memory "
                   "1e-3).")
flags.DEFINE_float("weight_decay", None, "Weight decay (spike_bp/hybrid 5e-4 coupled L2, proxy "
                   "1e-6, associative_memory 0.01 AdamW).")
# spike_bp / hybrid
flags.DEFINE_float("leak", None, "spike_bp/hybrid: neuron leak in (0, 1] (hybrid 1, spike_bp 0.99).")
flags.DEFINE_string("surrogate", None, "spike_bp/hybrid: surrogate name (tfsnn.surrogates.names(); "
                    "hybrid stdb, spike_bp lee).")
flags.DEFINE_string("optimizer", None, "spike_bp: sgd (default, the original's: no momentum, "
                    "coupled weight decay) or adam (decoupled weight decay, default lr 1e-3); "
                    "hybrid: adam (default, amsgrad) or sgd (momentum 0.95); both coupled L2.")
flags.DEFINE_list("fc_widths", None, "spike_bp/hybrid: hidden FC widths, e.g. 512,512.")
flags.DEFINE_integer("ann_epochs", None, "hybrid: ANN training epochs (10; the original: 300).")
flags.DEFINE_float("ann_learning_rate", None, "hybrid: ANN SGD learning rate (1e-2).")
flags.DEFINE_float("scaling_factor", None, "hybrid: threshold scaling after balancing (0.7).")
flags.DEFINE_integer("balance_examples", None, "hybrid: training images used for balancing (512).")
flags.DEFINE_integer("fine_tune_examples", None, "hybrid: STDB fine-tuning epochs use the first N "
                     "training images (0 = all, the default); the ANN trains on the whole split.")
flags.DEFINE_bool("divide_by_time", None, "hybrid: the SNN's readout is the accumulated output "
                  "divided by T, the ANN's logit scale, so STDB's cross-entropy is as soft as the "
                  "ANN's (same predictions); off: the original's plain sum (T times sharper).")
flags.DEFINE_bool("jit_compile", None, "spike_bp/hybrid: XLA-compile the whole training step "
                  "(off: a graph-mode step whose neuron time loops are XLA-compiled, within 1.5x "
                  "of the dense floor on every CPU benchmarked; on: faster on some CPUs, slower "
                  "on others, see README benchmarks; --resume may change it). Not with --strategy "
                  "mirrored/multi_worker.")
flags.DEFINE_integer("balance_timesteps", None, "hybrid: steps simulated for balancing "
                     "(default --timesteps; the original used 1000).")
# iir / associative_memory
flags.DEFINE_string("encoding", None, "Input encoding: iir copy (default) or poisson; "
                    "spike_bp/hybrid poisson (default) or direct (the analog image every step).")
flags.DEFINE_string("state", None, "iir: filter states per batch, zero (default) or carry.")
flags.DEFINE_float("tau_m", None, "iir/associative_memory: membrane time constant (4 / 8 steps).")
flags.DEFINE_float("tau_s", None, "iir/associative_memory: synapse time constant (1 / 2 steps).")
flags.DEFINE_float("filter_radius", None, "iir/associative_memory: keep every IIR synapse pole "
                   "within this radius during training (0.99); 0 trains the coefficients freely, "
                   "as the original, which can turn filters unstable.")
flags.DEFINE_float("dropout", None, "iir: dropout rate (0.3); spike_bp/hybrid: the SNN's "
                   "dropout rate, conv and FC alike (default: the architecture's, e.g. VGG conv "
                   "0.3 / FC 0.5; hybrid's ANN always trains with those).")
flags.DEFINE_list("lr_milestones", None, "iir/associative_memory/proxy: epochs where the learning "
                  "rate is multiplied by --lr_gamma (50,100 / 50,100,150 / none: the proxy "
                  "recipe's lr is constant).")
flags.DEFINE_float("lr_gamma", None, "iir/associative_memory/proxy: learning-rate decay factor "
                   "(0.1).")
# proxy
flags.DEFINE_integer("width", None, "proxy: channels of the first conv (128).")
flags.DEFINE_float("threshold", None, "proxy: IF threshold (2.0).")
flags.DEFINE_float("beta_1", None, "proxy: Adam beta_1 (0.8).")
flags.DEFINE_float("beta_2", None, "proxy: Adam beta_2 (0.99).")
flags.DEFINE_float("epsilon", None, "proxy: Adam epsilon (1e-8).")
flags.DEFINE_integer("freeze_bn_after", None, "proxy: epochs after which BN statistics freeze "
                     "(1, the recipe's; a value >= --epochs keeps BN in training mode "
                     "throughout).")
flags.DEFINE_bool("augment", None, "proxy: random 26x26 crop placed back with a 1-pixel zero "
                  "border (on).")
flags.DEFINE_bool("rate_target", None, "proxy: train on spike-rate targets (off).")
flags.DEFINE_float("target_spikes", None, "proxy: output spikes the true class is trained "
                   "towards, others 0 (1, the notebook's one-hot; at most --timesteps).")
# associative_memory
flags.DEFINE_string("data_path", None, "associative_memory: a patterns .npy (default: "
                    "$TFSNN_DATA_DIR/associative-memory/associative_target.npy, then "
                    "data/associative-memory/, then the copy bundled with tfsnn).")
flags.DEFINE_integer("repeats", None, "associative_memory: corrupted copies per pattern per epoch (100).")
flags.DEFINE_integer("delay", None, "associative_memory: target delay in steps (4).")
flags.DEFINE_float("noise_p", None, "associative_memory: background noise spike probability (0.005).")
flags.DEFINE_float("corrupt_p", None, "associative_memory: probability a copy is corrupted (0.4).")
flags.DEFINE_float("jitter_p", None, "associative_memory: probability of jitter corruption (0.7).")
flags.DEFINE_float("erase_p", None, "associative_memory: probability of block erasure (0.5).")
flags.DEFINE_integer("erase_size", None, "associative_memory: erased block size (40).")
flags.DEFINE_integer("eval_repeats", None, "associative_memory: test copies per pattern (100).")
flags.DEFINE_integer("dev_repeats", None, "associative_memory: dev copies per pattern (100).")
flags.DEFINE_bool("png", None, "associative_memory: write reconstructions.png (on).")

SCRIPT_FLAGS = tuple(name for name in FLAGS if name not in _OTHER_FLAGS)
LIST_INT_FLAGS = ("fc_widths", "lr_milestones")


def method_module(method):
    from tfsnn.training import associative_memory, iir, proxy, snn
    return {"spike_bp": snn, "hybrid": snn, "iir": iir, "proxy": proxy,
            "associative_memory": associative_memory}[method]


def build_config(method, module):
    """The method's config from the flags that were set; a flag the method lacks is an error."""
    config = {"method": method} if "method" in module.DEFAULTS else {}
    for name in SCRIPT_FLAGS:
        value = FLAGS[name].value
        if name == "method" or value is None:
            continue
        if name not in module.DEFAULTS:
            raise app.UsageError(f"--{name} does not apply to --method {method}")
        if name in LIST_INT_FLAGS:
            try:
                value = [int(v) for v in value]
            except ValueError:
                raise app.UsageError(f"--{name} must be integers, got {','.join(value)}")
        config[name] = value
    return config


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    module = method_module(FLAGS.method)
    config = build_config(FLAGS.method, module)

    def work():
        c = module.resolve(config)
        results = module.train(c)
        print(module.summary_line(c, results))
        print("learning curve:", *plot_history.write_learning_curve(c["run_dir"]))
    run_flags.guarded(work)


if __name__ == "__main__":
    app.run(main)
