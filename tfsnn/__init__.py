"""tfsnn: integer spiking neural networks on TensorFlow / Keras 3.

The integer-SNN pipeline (see README "Python quickstart"):

* ``tfsnn.quantize_model(model, k=0, ternary=True, first_layer="levels")``: a plain Keras 3
  model -> its quantization-aware twin (ternary weights, k-level activations), to ``fit``.
* ``tfsnn.convert(twin, k=None, use_int=True, timesteps=None, num_levels=None)``: the trained
  twin (or an ALL_INT model of ``tfsnn.models``) -> the exact integer SNN (a ``keras.Model``,
  images -> logits ``[B, T, classes]``), layer by layer through ``tfsnn.conversion.rules``.
* ``tfsnn.simulate(snn, images, labels=None, ann=twin, ...)`` -> ``tfsnn.SimResult``: per-step
  accuracy, ``agreement_per_step``, ``disagreements``, ``equal_from_step``,
  ``convergence_problems()``, spikes / SOPs per layer, ``layer_table()`` (rows) and ``table()``
  (the per-layer spike / SOP / energy ``tfsnn.report.Report``; ``.text()`` to print).
* ``tfsnn.export_snn`` / ``tfsnn.export_ann``: SavedModels.

Directly trained SNNs: ``tfsnn.models`` (by name), ``tfsnn.layers.neurons``, the procedures in
``tfsnn.training``.

Package map: ``quantizers``, ``surrogates`` (math, no layers); ``layers`` (quant, encoders,
neurons/, filters, sequence, readouts); ``models`` (registry); ``conversion``; ``simulation``;
``accounting``; ``data`` (registry, loaders); ``training``; ``export``; ``runs``; ``viz``;
``interop`` (optional bridges).
"""
import os as _os

_backend = _os.environ.get("KERAS_BACKEND", "tensorflow")
if _backend != "tensorflow":
    raise ImportError(
        f"tfsnn needs the TensorFlow backend of Keras 3, but KERAS_BACKEND={_backend!r}. "
        "Set KERAS_BACKEND=tensorflow (e.g. `export KERAS_BACKEND=tensorflow`) before importing.")

# TensorFlow's BFC allocator for host memory: it reuses freed buffers instead of returning them
# to the OS, so a training step stops paying page faults on every fresh [B, T, ...] tensor
# (spike_bp LeNet trained 1.85x faster with a lower peak RSS, bench/train_throughput.py).
# TensorFlow reads the variable at its first allocation, so this takes effect when tfsnn is
# imported before any tensor exists; set TF_CPU_ALLOCATOR_USE_BFC=false to keep the default.
_os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")

import keras as _keras  # noqa: E402

if _keras.backend.backend() != "tensorflow":  # e.g. set in ~/.keras/keras.json
    raise ImportError(
        f"tfsnn needs the TensorFlow backend of Keras 3, but Keras is using "
        f"{_keras.backend.backend()!r}. Set KERAS_BACKEND=tensorflow or edit ~/.keras/keras.json.")

# Everything a saved model can hold is registered on import, so that after ``import tfsnn``
# ``keras.models.load_model`` reads any tfsnn model (layers, losses, surrogates, quantizers).
from tfsnn import data, layers, losses, metrics, models, quantizers, surrogates  # noqa: E402
from tfsnn.conversion import convert, quantize_model  # noqa: E402
from tfsnn.export import export_ann, export_snn  # noqa: E402
from tfsnn.simulation import SimResult, simulate  # noqa: E402

__version__ = "0.1.0"
__all__ = [
    # the integer-SNN pipeline
    "quantize_model", "convert", "simulate", "SimResult", "export_snn", "export_ann",
    # building blocks
    "layers", "models", "quantizers", "surrogates", "losses", "metrics", "data",
]
