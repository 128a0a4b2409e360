"""STDB fine-tuning of a converted SNN, the hybrid method's second stage (Rathi et al. 2020,
"Enabling deep spiking neural networks with hybrid conversion and spike timing dependent
backpropagation", ICLR). The first stage, weight transfer and threshold balancing, is
``tfsnn.conversion.balancing``.

``compile_for_fine_tuning(snn, ...)`` then ``snn.fit(...)``: BPTT through the neurons' surrogate
(STDB by default) with Adam(amsgrad) and PyTorch-style *coupled* L2 weight decay; thresholds and
leak stay fixed. The original's alternative optimizer is SGD with momentum ``SGD_MOMENTUM``
(``train_snn.py --method hybrid --optimizer sgd``).
"""
import keras
import tensorflow as tf

from tfsnn.layers.neurons.lif import use_xla_loops
from tfsnn.models import spiking as snn_models

SGD_MOMENTUM = 0.95  # the original's SGD option (snn.py)
OPTIMIZERS = ("adam", "sgd")


def add_coupled_weight_decay(model, weight_decay):
    """PyTorch-style coupled L2: adds ``0.5 * wd * ||W||^2`` per kernel to the loss, i.e.
    ``wd * W`` to the gradient before Adam's normalisation (Keras' ``weight_decay`` is AdamW)."""
    for layer in snn_models.kernel_layers(model):
        reg = keras.regularizers.L2(0.5 * weight_decay) if weight_decay else None
        layer.kernel_regularizer = reg  # in the layer config: survives save / load
        layer.kernel.regularizer = reg  # active now


def compile_for_fine_tuning(snn, learning_rate=1e-4, weight_decay=5e-4, amsgrad=True,
                            optimizer=None, jit_compile=False, jit_neurons=True):
    """Compile ``snn`` for STDB fine-tuning: Adam(amsgrad), coupled L2, sparse CE on the
    accumulated output (``from_logits``), accuracy. ``learning_rate`` may be a schedule.
    ``optimizer``: None or ``"adam"`` (Adam, ``amsgrad``), ``"sgd"`` (SGD, momentum
    ``SGD_MOMENTUM``) or an optimizer instance (``learning_rate`` then unused).
    ``jit_neurons``: XLA for the neurons' time loops at any T (``lif.use_xla_loops``).
    ``jit_compile``: XLA for the whole train step as well (off by default, as spike_bp's). Which
    is faster depends on the CPU (``bench/train_throughput.py --network vgg5``, VGG5 at B 32, T
    20, idle machines): the graph-mode step ran at 1.13-1.40x its dense floor on both CPUs
    measured, the whole step compiled at 0.97-1.01x on one and 1.52-1.69x on the other. Not
    inside a ``tf.distribute`` strategy's scope (replica variables on several devices: "Trying
    to access resource ... located in device CPU:1 from device CPU:0")."""
    if jit_compile and tf.distribute.has_strategy():
        raise ValueError("jit_compile (XLA for the whole train step) does not work inside a "
                         "tf.distribute strategy's scope; leave it off")
    add_coupled_weight_decay(snn, weight_decay)
    if jit_neurons:
        use_xla_loops(snn)
    if optimizer is None or optimizer == "adam":
        opt = keras.optimizers.Adam(learning_rate, amsgrad=amsgrad)
    elif optimizer == "sgd":
        opt = keras.optimizers.SGD(learning_rate, momentum=SGD_MOMENTUM)
    elif isinstance(optimizer, str):
        raise ValueError(f"optimizer must be one of {OPTIMIZERS} or an optimizer, got "
                         f"{optimizer!r}")
    else:
        opt = optimizer
    snn.compile(optimizer=opt,
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"], jit_compile=jit_compile)
    return snn

