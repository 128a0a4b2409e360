"""Spike-based backpropagation from scratch (Lee et al. 2020; docs/specs/hybrid_and_spike_bp.md §3.3, §3.8, §4.4).

The network is a ``tfsnn.snn_models`` "lee" architecture (``LeeNeuron``: spike-gated surrogate
with the NG leak correction, spiking average pools, ``LeakyMeanReadout``). Training uses the
original's loss and optimiser:

* loss ``sum_batch sum_class (out - onehot)^2`` (``SumSquaredError``; no 1/2, no mean);
* SGD without momentum (the original parses a momentum flag but never uses it), weight decay
  5e-4 (coupled and decoupled coincide for plain SGD), lr x0.2 at fixed epochs (``tfsnn.training.schedules.step_decay``).

``optimizer="adam"`` (not the original's) swaps SGD for Adam with decoupled weight decay (Keras'
``weight_decay``). Measured on full Fashion-MNIST (LeNet, T 10, the analog image every step):
plain SGD grew the first conv kernel's mean |w| from 0.23 to 9.0 in 4 epochs, until its neurons
fired at almost every step, and validation fell after epoch 1 (84.1 -> 82.0 %); Adam (lr 1e-3,
5 epochs) grew it to 1.15 (validation 80.4, 78.3, 80.9, 81.9, 81.9 %), and both ended at the same
test accuracy (81.02 % and 81.05 %; README, "Directly trained SNNs on full Fashion-MNIST").
"""
import keras

from tfsnn.layers.neurons.lif import use_xla_loops
from tfsnn.losses import SumSquaredError


OPTIMIZERS = ("sgd", "adam")


def compile_spike_bp(snn, learning_rate=0.0033, weight_decay=5e-4, momentum=0.0,
                     jit_compile=False, jit_neurons=True, optimizer="sgd"):
    """Compile ``snn`` as the original: SGD(momentum 0, weight decay), sum-squared error,
    accuracy (argmax of the readout). ``learning_rate`` may be a schedule. ``optimizer``:
    ``"sgd"`` (the original) or ``"adam"`` (Adam, decoupled ``weight_decay``; module docstring).

    ``jit_neurons``: XLA-compile every neuron layer's time loops at any T (their
    ``jit_compile`` left at None becomes True; the library's automatic choice starts at
    T = 64): LeNet training at T = 20 went from 1.88x to 1.36x its dense floor
    (``bench/train_throughput.py``). ``jit_compile``: XLA for the whole train step (slower).
    """
    if jit_neurons:
        use_xla_loops(snn)
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    if optimizer == "adam":
        opt = keras.optimizers.Adam(learning_rate, weight_decay=weight_decay or None)
    else:
        opt = keras.optimizers.SGD(learning_rate, momentum=momentum,
                                   weight_decay=weight_decay or None)
    snn.compile(optimizer=opt, loss=SumSquaredError(), metrics=["sparse_categorical_accuracy"],
                jit_compile=jit_compile)
    return snn
