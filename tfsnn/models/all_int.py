"""Architectures of the seed papers, by name.

ALL_INT_SNN (docs/specs/all_int_snn.md §1.4): every hidden layer is ``QuantConv2D -> QuantActivation``
(conv without bias -> BN -> ReLU -> quantizer); "P2" is a learned 2x2 stride-2 conv, "FC" layers
are convs covering the remaining map; the first conv and the output ``Dense(10)`` (no bias) stay
full precision. Layer names: ``conv<i>`` / ``act<i>`` for i = 1.., then ``flatten`` and ``output``.

* ``all_int_lenet``: 28x28x1, 32C5-P2-64C5-P2-1000.
* ``all_int_vgg``: 24x24x3, 96C3-256C3-P2-384C3-P2-384C3-256C3-P2-1024-1024.
"""
import keras

from tfsnn import quantizers as q
from tfsnn.integers import check_integer
from tfsnn.layers.quant import QuantActivation, QuantConv2D, QuantDense

# (filters, kernel, stride, padding) per hidden conv, first one is the encoder.
ALL_INT_ARCHS = {
    "all_int_lenet": dict(input_shape=(28, 28, 1), convs=[
        (32, 5, 1, "valid"), (32, 2, 2, "same"), (64, 5, 1, "valid"), (64, 2, 2, "same"),
        (1000, 4, 1, "valid")]),
    "all_int_vgg": dict(input_shape=(24, 24, 3), convs=[
        (96, 3, 1, "same"), (256, 3, 1, "same"), (256, 2, 2, "same"), (384, 3, 1, "same"),
        (384, 2, 2, "same"), (384, 3, 1, "same"), (256, 3, 1, "same"), (256, 2, 2, "same"),
        (1024, 3, 1, "valid"), (1024, 1, 1, "valid")]),
}


def all_int_model(name, k=0, quantized=True, ternary=True, num_classes=10):
    """Build an ALL_INT_SNN architecture.

    Args:
      name: a key of ``ALL_INT_ARCHS``.
      k: fractional bits of the hidden activations (step 2^-k); ignored when not quantized.
      quantized: False builds the full-precision twin (BN -> ReLU, float kernels).
      ternary: ternary kernels for every conv but the first (only when quantized).
    Returns:
      A functional ``keras.Model`` named ``name`` (``_fp`` appended for the FP twin) mapping
      images ``[batch, H, W, C]`` in [0, 1) to logits ``[batch, num_classes]``.
    """
    if name not in ALL_INT_ARCHS:
        raise ValueError(f"unknown model {name!r}; known: {sorted(ALL_INT_ARCHS)}")
    check_integer(k, "k", 0)
    arch = ALL_INT_ARCHS[name]
    x = inputs = keras.Input(arch["input_shape"], name="image")
    for i, (filters, size, stride, padding) in enumerate(arch["convs"], start=1):
        first = i == 1
        kq = "ternary" if (quantized and ternary and not first) else None
        aq = None if not quantized else (q.FirstLayer(4) if first else q.KLevel(k))
        x = QuantConv2D(filters, size, stride, padding, kernel_quantizer=kq, name=f"conv{i}")(x)
        x = QuantActivation(aq, name=f"act{i}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    outputs = QuantDense(num_classes, name="output")(x)
    return keras.Model(inputs, outputs, name=name if quantized else f"{name}_fp")
