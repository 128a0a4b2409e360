"""tfsnn: integer spiking neural networks on TensorFlow / Keras 3.

Train a ternary-weight, k-level-activation ANN (``tfsnn.layers``, ``tfsnn.models``),
convert it to an all-integer SNN and count its spikes and synaptic operations.
"""
import os as _os

_backend = _os.environ.get("KERAS_BACKEND", "tensorflow")
if _backend != "tensorflow":
    raise ImportError(
        f"tfsnn needs the TensorFlow backend of Keras 3, but KERAS_BACKEND={_backend!r}. "
        "Set KERAS_BACKEND=tensorflow (e.g. `export KERAS_BACKEND=tensorflow`) before importing.")

import keras as _keras  # noqa: E402

if _keras.backend.backend() != "tensorflow":  # e.g. set in ~/.keras/keras.json
    raise ImportError(
        f"tfsnn needs the TensorFlow backend of Keras 3, but Keras is using "
        f"{_keras.backend.backend()!r}. Set KERAS_BACKEND=tensorflow or edit ~/.keras/keras.json.")

# Everything a saved model can hold is registered on import, so that after ``import tfsnn``
# ``keras.models.load_model`` reads any tfsnn model (layers, losses, surrogates, quantizers).
from tfsnn import quantizers  # noqa: E402,F401
from tfsnn import iir_models, layers  # noqa: E402,F401
from tfsnn.training import spike_bp as _spike_bp  # noqa: E402,F401  (SumSquaredError)

__version__ = "0.1.0"
