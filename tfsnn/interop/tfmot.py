"""tensorflow-model-optimization (tfmot) bridge: ALL_INT QAT under Keras 2 (``tf_keras``).

tfmot only runs on Keras 2. This module applies tfsnn's own quantizer functions
(``tfsnn.quantizers.ternary``, ``k_level``, ``first_layer``: the same TF code the Keras 3 layers
run) to ``tf_keras`` layers through tfmot's ``Quantizer`` / ``QuantizeConfig`` API, and exports the
trained model in tfsnn's portable form (``tfsnn.interop.portable``) for conversion to an SNN.
The training procedure around it is ``tfsnn.training.tfmot``.

Needs ``pip install tfsnn[tfmot]`` and ``TF_USE_LEGACY_KERAS=1`` set before TensorFlow is
imported; otherwise importing this module raises one ImportError saying how to enable it.
"""
import os

_HOW = ("The tfmot bridge needs tensorflow-model-optimization and tf-keras "
        "(`pip install tfsnn[tfmot]`) and Keras 2 active: set TF_USE_LEGACY_KERAS=1 in the "
        "environment before TensorFlow is imported (e.g. `TF_USE_LEGACY_KERAS=1 python ...`).")
if os.environ.get("TF_USE_LEGACY_KERAS", "").lower() not in ("1", "true", "yes"):
    raise ImportError("Keras 3 is active (TF_USE_LEGACY_KERAS is not set). " + _HOW)
try:
    import tensorflow_model_optimization as tfmot
    import tf_keras
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(f"{e}. " + _HOW) from e

import tensorflow as tf  # noqa: E402

from tfsnn import quantizers as q  # noqa: E402
from tfsnn.integers import check_integer  # noqa: E402
from tfsnn.interop import portable  # noqa: E402
from tfsnn.layers.quant import CONV_INIT, DENSE_INIT  # noqa: E402
from tfsnn.models.all_int import ALL_INT_ARCHS  # noqa: E402

if tf.keras is not tf_keras and getattr(tf.keras, "__name__", "").startswith("keras."):
    raise ImportError("tf.keras resolves to Keras 3. " + _HOW)

qk = tfmot.quantization.keras


class TernaryWeightQuantizer(qk.quantizers.Quantizer):
    """tfmot weight quantizer running ``tfsnn.quantizers.ternary`` (STE, Δ = t·mean|W|)."""

    def __init__(self, threshold=0.7):
        self.threshold = float(threshold)

    def build(self, tensor_shape, name, layer):
        return {}

    def __call__(self, inputs, training, weights, **kwargs):
        return q.ternary(inputs, self.threshold)

    def get_config(self):
        return {"threshold": self.threshold}


class ActivationQuantizer(qk.quantizers.Quantizer):
    """tfmot output quantizer running ``k_level`` (``first=False``) or ``first_layer`` (includes ReLU)."""

    def __init__(self, k=0, first=False):
        self.k, self.first = int(k), bool(first)

    def build(self, tensor_shape, name, layer):
        return {}

    def __call__(self, inputs, training, weights, **kwargs):
        return q.first_layer(inputs) if self.first else q.k_level(inputs, self.k)

    def get_config(self):
        return {"k": self.k, "first": self.first}


class KernelQuantizeConfig(qk.QuantizeConfig):
    """Quantizes a Conv2D/Dense kernel with ``TernaryWeightQuantizer``."""

    def __init__(self, threshold=0.7):
        self.threshold = float(threshold)

    def get_weights_and_quantizers(self, layer):
        return [(layer.kernel, TernaryWeightQuantizer(self.threshold))]

    def get_activations_and_quantizers(self, layer):
        return []

    def set_quantize_weights(self, layer, quantize_weights):
        layer.kernel = quantize_weights[0]

    def set_quantize_activations(self, layer, quantize_activations):
        pass

    def get_output_quantizers(self, layer):
        return []

    def get_config(self):
        return {"threshold": self.threshold}


class OutputQuantizeConfig(qk.QuantizeConfig):
    """Quantizes a BatchNormalization layer's output: ReLU + k-level (or first-layer) quantizer."""

    def __init__(self, k=0, first=False):
        self.k, self.first = int(k), bool(first)

    def get_weights_and_quantizers(self, layer):
        return []

    def get_activations_and_quantizers(self, layer):
        return []

    def set_quantize_weights(self, layer, quantize_weights):
        pass

    def set_quantize_activations(self, layer, quantize_activations):
        pass

    def get_output_quantizers(self, layer):
        return [ActivationQuantizer(self.k, self.first)]

    def get_config(self):
        return {"k": self.k, "first": self.first}


class _NoLayoutTransform(qk.QuantizeLayoutTransform):
    def apply(self, model, layer_quantize_map):
        return model, layer_quantize_map


class _Registry(qk.QuantizeRegistry):
    def get_quantize_config(self, layer):
        raise ValueError(f"layer {layer.name!r} has no tfsnn QuantizeConfig; annotate it")

    def supports(self, layer):
        return False


class AllIntScheme(qk.QuantizeScheme):
    """A tfmot scheme that keeps the layout as is (no Conv+BN folding) and adds nothing else."""

    def get_layout_transformer(self):
        return _NoLayoutTransform()

    def get_quantize_registry(self):
        return _Registry()


SCOPE = {c.__name__: c for c in (TernaryWeightQuantizer, ActivationQuantizer,
                                 KernelQuantizeConfig, OutputQuantizeConfig)}


def float_model(name="all_int_lenet", num_classes=10):
    """The ALL_INT architecture as a plain ``tf_keras`` model (Conv2D no bias -> BN -> ...).

    Layer names follow ``tfsnn.models``: ``conv<i>``, ``act<i>`` (the BN), ``flatten``, ``output``.
    Initializers and BN settings are those of the tfsnn model.
    """
    arch = ALL_INT_ARCHS[name]
    x = inputs = tf_keras.Input(arch["input_shape"], name="image")
    for i, (filters, size, stride, padding) in enumerate(arch["convs"], start=1):
        x = tf_keras.layers.Conv2D(filters, size, stride, padding, use_bias=False, name=f"conv{i}",
                                   kernel_initializer=tf_keras.initializers.get(CONV_INIT))(x)
        x = tf_keras.layers.BatchNormalization(
            momentum=0.9, epsilon=1e-5, name=f"act{i}",
            gamma_initializer=tf_keras.initializers.RandomNormal(1.0, 0.002))(x)
    x = tf_keras.layers.Flatten(name="flatten")(x)
    outputs = tf_keras.layers.Dense(num_classes, use_bias=False, name="output",
                                    kernel_initializer=tf_keras.initializers.get(DENSE_INIT))(x)
    return tf_keras.Model(inputs, outputs, name=name)


def quantize_model(model, k=0, ternary=True):
    """Apply ALL_INT QAT to a ``float_model`` with tfmot's annotate/apply API.

    Every ``conv<i>`` but the first gets ternary kernels (if ``ternary``); every BN ``act<i>`` gets
    its output quantized (``first_layer`` for act1, ``k_level`` with ``k`` otherwise, ReLU
    included). Returns the tfmot-quantized ``tf_keras`` model (layers wrapped as ``quant_<name>``).
    """
    k = check_integer(k, "k", 0)

    def annotate(layer):
        name = layer.name
        if name.startswith("conv") and name != "conv1" and ternary:
            return qk.quantize_annotate_layer(layer, KernelQuantizeConfig())
        if name.startswith("act"):
            return qk.quantize_annotate_layer(layer, OutputQuantizeConfig(k, name == "act1"))
        return layer

    annotated = tf_keras.models.clone_model(model, clone_function=annotate)
    annotated.set_weights(model.get_weights())
    with qk.quantize_scope(SCOPE):
        return qk.quantize_apply(annotated, scheme=AllIntScheme())


def _unwrap(layer):
    return getattr(layer, "layer", layer)


def portable_arrays(qat_model):
    """The portable arrays (``tfsnn.interop.portable``) of a tfmot-quantized ALL_INT model."""
    out = {}
    for wrapped in qat_model.layers:
        layer = _unwrap(wrapped)
        if layer.name.startswith("conv") or layer.name == "output":
            kernel = [w for w in wrapped.weights if w.name.split("/")[-1].startswith("kernel")]
            out[f"{layer.name}/kernel"] = kernel[0].numpy()
        elif layer.name.startswith("act"):
            for key in portable.BN_KEYS:
                w = [v for v in wrapped.weights if v.name.split("/")[-1].startswith(key)]
                out[f"{layer.name}/{key}"] = w[0].numpy()
    return out


def export_portable(qat_model, path, name="all_int_lenet", k=0, ternary=True):
    """Write a tfmot QAT model's kernels and BN parameters as a portable ``.npz``."""
    portable.save(path, portable_arrays(qat_model), name, k, ternary)
    return path

