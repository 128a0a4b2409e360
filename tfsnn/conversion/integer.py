"""Quantized ANN -> integer SNN with dynamic integer thresholds (docs/specs/all_int_snn.md §2.4, §6.4).

``convert(model)`` maps a trained ``tfsnn.models.all_int_model`` (``QuantConv2D ->
QuantActivation`` blocks, the first with the ``FirstLayer`` quantizer, the others ``KLevel(k)``,
then ``Flatten`` and a ``QuantDense`` output) to a Keras model of
``tfsnn.layers.spiking`` layers with the same names:
``SpikeEncoder`` (conv1) -> ``SpikingConv2D`` (conv2..) -> ``OutputAccumulator`` (output).

Thresholds, per output channel, in membrane units ``V = 2^k z`` (``z`` the ANN conv output):

* Integer mode (default, ``use_int=True``; hidden kernels must be integer valued, e.g.
  ternary): ``theta_m`` = the smallest integer ``V`` whose level under the Keras layer itself,
  ``2^k * QuantActivation(V / 2^k)`` evaluated in float32, is ``>= m``; found by bisection
  (the level is monotone in ``V``). So ``#{m: V >= theta_m}`` equals the Keras model's float32
  decision for *every* integer ``V`` with ``|V| <= 2^24``: SNN == Keras ANN exactly, with no
  rounding scale and no ties (the original's ``round(theta_1) * 10^4`` is not used).
* Float mode (``use_int=False``): the analytic float64 thresholds of docs/specs/all_int_snn.md §6.4,
  ``theta_m = 2^k mu + (m - 1/2 - 2^k beta) sigma / gamma``, ``sigma = sqrt(var + eps)``:
  equal to the Keras model up to float ties (none on real data in the tests).
* Encoder (both modes, full precision as in the original): ``theta_m`` (m = 1..4) = the
  smallest float32 ``z`` whose Keras first-layer level is ``>= m``, by bisection over the
  ordered float32 values: exact in float32.
* ``gamma < 0`` (docs/specs/all_int_snn.md §5.4): the channel's level decreases with ``z``; its kernel column is
  negated (``V' = -V``) so the thresholds are increasing again; exact. ``gamma == 0``: a
  constant level ``q0``, i.e. ``theta_m = -inf`` for ``m <= q0`` and ``+inf`` above (int32
  min / max in integer mode), so the neuron fires ``q0`` spikes with no input.
* Thresholds ``+inf`` (int32 max) mean "never"; ``-inf`` (int32 min) mean "always".

The table holds ``num_levels`` (default ``timesteps``) thresholds per channel: exact for up to
``num_levels`` steps, since a net count cannot exceed ``t + 1``.
"""
import keras

from tfsnn import quantizers as q
from tfsnn.integers import check_integer
from tfsnn.layers.quant import QuantActivation, QuantConv2D, QuantDense
from tfsnn.layers.neurons.integer import OutputAccumulator, SpikeEncoder, SpikingConv2D

SUPPORTED = ("InputLayer", "QuantConv2D followed by QuantActivation (first: FirstLayer "
             "quantizer, then KLevel(k))", "Flatten", "QuantDense (last layer, the output)")


def default_timesteps(k):
    """Default ``T = 32 * 2^k``: ANN activations up to 31 reach their level, with slack for
    corrections (levels scale with 2^k). ``simulate`` reports whether the network converged."""
    return 32 * 2 ** int(k)


def parse_model(model):
    """Check a quantized ANN's layers; returns ``(blocks, output_layer, k)``.

    ``blocks``: list of ``(QuantConv2D, QuantActivation)``. Raises ``ValueError`` naming the
    first unsupported layer and listing what is supported.
    """
    layers = [l for l in model.layers if not isinstance(l, keras.layers.InputLayer)]
    blocks, out, i = [], None, 0

    def bad(layer, why=""):
        return ValueError(
            f"tfsnn.convert: layer {layer.name!r} ({type(layer).__name__}) is not supported"
            f"{': ' + why if why else ''}. Supported, in this order: {'; '.join(SUPPORTED)}.")

    while i < len(layers):
        layer = layers[i]
        if isinstance(layer, QuantConv2D):
            if i + 1 >= len(layers) or not isinstance(layers[i + 1], QuantActivation):
                raise bad(layer, "a QuantConv2D must be followed by a QuantActivation")
            act = layers[i + 1]
            want = q.FirstLayer if not blocks else q.KLevel
            if not isinstance(act.quantizer, want):
                raise bad(act, f"expected a {want.__name__} quantizer, got {act.quantizer!r}")
            blocks.append((layer, act))
            i += 2
        elif isinstance(layer, keras.layers.Flatten) and blocks and out is None:
            i += 1
        elif isinstance(layer, QuantDense) and blocks and i == len(layers) - 1:
            out = layer
            i += 1
        else:
            raise bad(layer)
    if len(blocks) < 1 or out is None:
        raise ValueError("tfsnn.convert: the model needs at least one QuantConv2D/QuantActivation "
                         "block and a QuantDense output layer; supported: " + "; ".join(SUPPORTED))
    ks = {act.quantizer.k for _, act in blocks[1:]}
    if len(ks) > 1:
        raise ValueError(f"tfsnn.convert: hidden layers use different k {sorted(ks)}; one k needed")
    k = ks.pop() if ks else 0
    return blocks, out, k


def convert(model: keras.Model, k: int = None, use_int: bool = True, timesteps: int = None,
            num_levels: int = None, name: str = None) -> keras.Model:
    """Convert a quantized ANN to the integer SNN, layer by layer through the rules of
    ``tfsnn.conversion.rules`` (any ``tfsnn.quantize_model`` twin, or an ALL_INT model).

    Args:
      model: a quantized Keras model (``quantize_model`` twin or ALL_INT layout), trained.
      k: fractional bits of the hidden activations; default the model's; must match it.
      use_int: integer mode (int32 kernels, thresholds and membranes; needs integer-valued hidden
        kernels, i.e. ternary) or float mode (float32 kernels, float64 analytic thresholds).
      timesteps: steps the SNN model runs (``T``); default ``default_timesteps(k)``.
      num_levels: thresholds per hidden channel; default ``timesteps`` (exact for T <= it).
      name: model name; default ``<model.name>_snn``.
    Returns:
      A ``keras.Model`` mapping images ``[B, H, W, C]`` to logits ``[B, T, classes]`` (``2^k`` x
      the ANN's at convergence); its layers carry the names of the ANN's conv / output layers.
    """
    model_k = model_k_of(model)
    if k is None:
        k = model_k
    k = check_integer(k, "k", 0)
    if k != model_k:
        raise ValueError(f"k={k} does not match the model's hidden quantizers (k={model_k}); "
                         "the SNN thresholds must use the k the ANN was trained with")
    timesteps = default_timesteps(k) if timesteps is None else int(timesteps)
    if timesteps < 1:
        raise ValueError(f"timesteps must be >= 1, got {timesteps!r}")
    num_levels = timesteps if num_levels is None else int(num_levels)
    if num_levels < 1:
        raise ValueError(f"num_levels must be >= 1, got {num_levels!r}")
    from tfsnn.conversion.rules import build_snn
    return build_snn(model, k, bool(use_int), timesteps, num_levels, name or f"{model.name}_snn")


def model_k_of(model):
    """The ``k`` of a quantized model's hidden ``KLevel`` quantizers (0 if it has none); a
    ValueError if they differ or if the model has no quantized activation at all."""
    acts = [l for l in model.layers if isinstance(l, QuantActivation)]
    if not acts:
        raise ValueError(f"tfsnn.convert: model {model.name!r} has no QuantActivation; quantize "
                         "it first with tfsnn.quantize_model (supported: "
                         + "; ".join(SUPPORTED) + ")")
    ks = {a.quantizer.k for a in acts if isinstance(a.quantizer, q.KLevel)}
    if len(ks) > 1:
        raise ValueError(f"tfsnn.convert: hidden layers use different k {sorted(ks)}; one k needed")
    return ks.pop() if ks else 0


def split_snn(snn):
    """``(encoder, [hidden SpikingConv2D...], output)`` of a converted SNN model."""
    layers = [l for l in snn.layers if not isinstance(l, keras.layers.InputLayer)]
    if (len(layers) < 2 or not isinstance(layers[0], SpikeEncoder)
            or not isinstance(layers[-1], OutputAccumulator)
            or not all(isinstance(l, SpikingConv2D) for l in layers[1:-1])):
        raise ValueError("expected an SNN from tfsnn.convert.convert: SpikeEncoder, "
                         f"SpikingConv2D..., OutputAccumulator; got {[type(l).__name__ for l in layers]}")
    return layers[0], layers[1:-1], layers[-1]
