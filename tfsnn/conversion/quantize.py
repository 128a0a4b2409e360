"""``quantize_model``: a plain Keras 3 model -> its quantization-aware twin of tfsnn layers.

The Keras 3 counterpart of tfmot's ``quantize_model``. Every ReLU becomes a quantizer (a
spiking neuron after ``tfsnn.convert``); the layers before it fold into one synapse + BN block:

* ``Conv2D`` / ``DepthwiseConv2D`` / ``Dense`` -> ``QuantConv2D`` / ``QuantDepthwiseConv2D`` /
  ``QuantDense`` (bias-free; ternary kernels except the first synapse, which stays full
  precision and feeds the encoder), the float kernel copied in; the bias folds into the BN
  that follows (``moving_mean -= bias``; a BN with ``beta = bias`` is inserted if there is none:
  ternary kernels carry no scale, the BN supplies it).
* ``BatchNormalization`` (before the ReLU) + ``ReLU`` / ``Activation("relu")`` /
  ``activation="relu"`` -> ``QuantActivation`` (first layer: ``FirstLayer(levels)``, then
  ``KLevel(k)``), BN weights copied.
* A residual ``Add`` / ``Concatenate`` input that is not yet quantized (e.g. ``conv -> BN``) gets a
  signed ``QuantActivation`` (``floor(2^k u + 1/2) / 2^k``, no ReLU); the ReLU after the ``Add``
  becomes a BN-less ``QuantActivation``. Since the other input is on the ``2^-k`` grid, this is
  the same function as quantizing ``relu(BN(conv) + x)`` directly.
* ``MaxPooling2D`` / ``AveragePooling2D`` / ``GlobalAveragePooling2D`` / ``Flatten`` / ``Reshape`` /
  ``ZeroPadding2D`` / ``Dropout`` / ``Add`` / ``Concatenate`` are kept (fresh copies).
* The head (layers after the last ReLU on the way to the output, e.g. ``GAP -> Dense``) is kept
  in full precision, bias included: the SNN evaluates it on its converged spike counts.
"""
import keras
import numpy as np

from tfsnn import quantizers as q
from tfsnn.integers import check_integer
from tfsnn.layers.quant import QuantActivation, QuantConv2D, QuantDense, QuantDepthwiseConv2D

SUPPORTED = ("InputLayer", "Conv2D", "DepthwiseConv2D", "Dense", "BatchNormalization",
             "ReLU", "Activation('relu')", "MaxPooling2D", "AveragePooling2D",
             "GlobalAveragePooling2D", "Flatten", "Reshape", "Dropout", "ZeroPadding2D", "Add",
             "Concatenate")
_SYNAPSES = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)
_KEPT = (keras.layers.MaxPooling2D, keras.layers.AveragePooling2D,
         keras.layers.GlobalAveragePooling2D, keras.layers.Flatten, keras.layers.Reshape,
         keras.layers.Dropout, keras.layers.ZeroPadding2D)
_JOINS = (keras.layers.Add, keras.layers.Concatenate)


def unsupported(layer, why=""):
    """The one error for a layer tfsnn cannot quantize / convert exactly."""
    return ValueError(
        f"tfsnn: layer {layer.name!r} ({type(layer).__name__}) is not supported"
        f"{': ' + why if why else ''}. Supported layers: {', '.join(SUPPORTED)}.")


def graph_nodes(model):
    """``[(layer, [input layer names])]`` of a Sequential or Functional model, in topological
    order (InputLayers included). A layer called more than once is refused."""
    if isinstance(model, keras.Sequential):
        names, nodes = [], []
        layers = list(model.layers)
        inp = keras.layers.InputLayer(shape=model.input_shape[1:], name=f"{model.name}_input")
        nodes.append((inp, []))
        prev = inp.name
        for layer in layers:
            nodes.append((layer, [prev]))
            prev = layer.name
        return nodes
    by_name = {l.name: l for l in model.layers}
    nodes = []
    for cfg in model.get_config()["layers"]:
        inbound = cfg.get("inbound_nodes", [])
        if len(inbound) > 1:
            raise unsupported(by_name[cfg["name"]], "a layer called more than once (shared "
                              "weights) cannot be converted")
        names = []

        def collect(obj):
            if isinstance(obj, dict):
                if obj.get("class_name") == "__keras_tensor__":
                    names.append(obj["config"]["keras_history"][0])
                else:
                    for v in obj.values():
                        collect(v)
            elif isinstance(obj, (list, tuple)):
                for v in obj:
                    collect(v)
        collect(inbound)
        nodes.append((by_name[cfg["name"]], names))
    return nodes


def _output_names(spec):
    """Layer names of a functional config's ``output_layers`` (one ``[name, i, j]`` or a list)."""
    return [spec[0]] if spec and isinstance(spec[0], str) else [o[0] for o in spec]


def _is_relu(layer):
    if isinstance(layer, keras.layers.ReLU):
        cfg = layer.get_config()
        if cfg.get("max_value") is None and not cfg.get("negative_slope") and not cfg.get("threshold"):
            return True
        raise unsupported(layer, "only a plain ReLU (no max_value / slope / threshold) is exact")
    return (isinstance(layer, keras.layers.Activation)
            and keras.activations.serialize(layer.activation) in ("relu", {"class_name": "relu"}))


def _act_name(layer):
    return keras.activations.serialize(layer.activation) if hasattr(layer, "activation") else None


def _activation_kind(layer):
    """'relu', 'linear' or the name of another activation of a synapse layer."""
    a = getattr(layer, "activation", None)
    if a is None:
        return "linear"
    name = getattr(a, "__name__", str(a))
    return name


def _clone(layer):
    return type(layer).from_config(layer.get_config())


def quantize_model(model: keras.Model, k: int = 0, ternary: bool = True,
                   first_layer: str = "levels", name: str = None,
                   bn_momentum: float = 0.9) -> keras.Model:
    """The quantization-aware twin of a plain Keras model (see the module docstring).

    Args:
      model: a built Sequential or Functional Keras 3 model of the supported layers.
      k: fractional bits of the hidden activations (step ``2^-k``), ``>= 0``.
      ternary: ternary ``{-1, 0, 1}`` kernels for every synapse but the first (needed by
        ``tfsnn.convert(..., use_int=True)``); False keeps float kernels.
      first_layer: the first layer's quantizer: ``"levels"`` (``FirstLayer(4)``: levels 0..4,
        the ALL_INT encoder) or ``"levels:N"`` (levels 0..N).
      name: the twin's name (default ``<model.name>_quant``).
      bn_momentum: momentum of the twin's BatchNormalization moving statistics (default 0.9,
        the ALL_INT recipe's). Ternary kernels flip during training, so the pre-activation
        statistics move faster than in a float net; with Keras' default 0.99 the moving
        statistics lag and a VGG twin evaluated at 10-30 % while training at 86 %. ``None``
        keeps each BatchNormalization's own momentum.
    Returns:
      An uncompiled functional ``keras.Model`` (layer names follow the original's), float
      weights copied in, ready for ``compile`` / ``fit`` and then ``tfsnn.convert``.
    """
    k = check_integer(k, "k", 0)
    if bn_momentum is not None and not (isinstance(bn_momentum, (int, float))
                                        and 0.0 <= float(bn_momentum) < 1.0):
        raise ValueError(f"bn_momentum must be None or a number in [0, 1), got {bn_momentum!r}")
    if not isinstance(first_layer, str) or not first_layer.startswith("levels"):
        raise ValueError(f"first_layer must be 'levels' or 'levels:N', got {first_layer!r}")
    _, _, n_lev = first_layer.partition(":")
    levels = check_integer(int(n_lev) if n_lev else 4, "first_layer levels", 1)
    if not isinstance(model, keras.Model):
        raise TypeError(f"model must be a keras.Model, got {type(model).__name__}")
    nodes = graph_nodes(model)
    consumers = {}
    for layer, ins in nodes:
        for i in ins:
            consumers.setdefault(i, []).append(layer)
    for layer, _ in nodes:
        if not isinstance(layer, (keras.layers.InputLayer, keras.layers.BatchNormalization,
                                  keras.layers.ReLU, keras.layers.Activation,
                                  *_SYNAPSES, *_KEPT, *_JOINS)):
            raise unsupported(layer)
        if isinstance(layer, keras.layers.Activation) and not _is_relu(layer):
            if consumers.get(layer.name) or _activation_kind(layer) not in ("softmax", "linear"):
                raise unsupported(layer, "only ReLU activations (softmax / linear at the output)")
        if isinstance(layer, _SYNAPSES) and _activation_kind(layer) not in ("relu", "linear"):
            if consumers.get(layer.name) or _activation_kind(layer) != "softmax":
                raise unsupported(layer, f"activation {_activation_kind(layer)!r}; only relu "
                                  "(softmax / linear at the output)")

    # head: layers from which no ReLU is reachable (evaluated in float on converged counts)
    has_relu = {}
    for layer, _ in reversed(nodes):
        here = _is_relu(layer) if isinstance(layer, (keras.layers.ReLU, keras.layers.Activation)) \
            else (isinstance(layer, _SYNAPSES) and _activation_kind(layer) == "relu")
        has_relu[layer.name] = here or any(has_relu[c.name] for c in consumers.get(layer.name, []))

    tensors, state = {}, {}   # name -> twin tensor; name -> 'image' | 'pre' | 'q' | 'head'
    pending = {}              # name -> dict(bias=..., bn=BN layer or None) for 'pre' tensors
    weights = []              # (twin layer, weight list) set after the model is built

    def activation(src, lname, signed=False, batch_norm=True):
        p = pending.get(src, {})
        first = state[src] == "pre_first"
        quant = q.FirstLayer(levels) if first else q.KLevel(k)
        if first and signed:
            raise unsupported(layer_of[lname], "the first synapse must be followed by a ReLU")
        bn = p.get("bn")
        kw = {} if bn is None else dict(momentum=float(bn.momentum), epsilon=float(bn.epsilon))
        if bn_momentum is not None:
            kw["momentum"] = float(bn_momentum)
        act = QuantActivation(quant, batch_norm=batch_norm, signed=signed, name=lname, **kw)
        t = act(tensors[src])
        if batch_norm:
            c = int(tensors[src].shape[-1])
            bias = p.get("bias")
            bias = np.zeros(c) if bias is None else np.asarray(bias, np.float64)
            if bn is None:
                w = [np.ones(c), bias, np.zeros(c), np.ones(c)]
            else:
                g = np.ones(c) if bn.gamma is None else np.asarray(bn.gamma)
                b = np.zeros(c) if bn.beta is None else np.asarray(bn.beta)
                w = [g, b, np.asarray(bn.moving_mean) - bias, np.asarray(bn.moving_variance)]
            weights.append((act.bn, [np.asarray(v, np.float32) for v in w]))
        return t

    layer_of = {l.name: l for l, _ in nodes}
    for layer, ins in nodes:
        lname = layer.name
        if isinstance(layer, keras.layers.InputLayer):
            tensors[lname] = keras.Input(tuple(layer.batch_shape[1:]), name=lname)
            state[lname] = "image"
            continue
        src = ins[0] if ins else None
        if not has_relu[lname]:
            # head layer: full precision, kept as is (inputs must be quantized / head)
            for i in ins:
                if state[i] in ("pre", "pre_first"):
                    tensors[i] = activation(i, f"{i}_q", signed=True)
                    state[i] = "q"
                elif state[i] == "image":
                    raise unsupported(layer, "no ReLU between the input and this layer: nothing "
                                      "to convert to spikes")
            new = _clone(layer)
            x = [tensors[i] for i in ins]
            tensors[lname] = new(x if len(x) > 1 or isinstance(layer, _JOINS) else x[0])
            if layer.weights:
                weights.append((new, layer.get_weights()))
            state[lname] = "head"
            continue
        st = state[src]
        if isinstance(layer, _SYNAPSES):
            if st in ("pre", "pre_first"):
                raise unsupported(layer, "two synapses without a ReLU between them")
            first = st == "image"
            kq = "ternary" if (ternary and not first) else None
            cfg = layer.get_config()
            if isinstance(layer, keras.layers.Dense):
                new = QuantDense(layer.units, kernel_quantizer=kq, name=lname)
            elif isinstance(layer, keras.layers.DepthwiseConv2D):
                new = QuantDepthwiseConv2D(cfg["kernel_size"], cfg["strides"], cfg["padding"],
                                           cfg["depth_multiplier"], cfg["dilation_rate"],
                                           kernel_quantizer=kq, name=lname)
            else:
                if cfg.get("groups", 1) != 1:
                    raise unsupported(layer, "grouped convolutions")
                new = QuantConv2D(layer.filters, cfg["kernel_size"], cfg["strides"],
                                  cfg["padding"], kernel_quantizer=kq,
                                  dilation_rate=cfg["dilation_rate"], name=lname)
            if cfg.get("data_format", "channels_last") != "channels_last":
                raise unsupported(layer, "data_format must be channels_last")
            tensors[lname] = new(tensors[src])
            weights.append((new, [layer.get_weights()[0]]))
            pending[lname] = dict(bias=layer.get_weights()[1] if len(layer.get_weights()) > 1
                                  else None, bn=None)
            state[lname] = "pre_first" if first else "pre"
            if _activation_kind(layer) == "relu":
                tensors[lname] = activation(lname, f"{lname}_act")
                state[lname] = "q"
        elif isinstance(layer, keras.layers.BatchNormalization):
            if st not in ("pre", "pre_first") or pending[src]["bn"] is not None:
                raise unsupported(layer, "a BatchNormalization must directly follow a Conv2D / "
                                  "DepthwiseConv2D / Dense (before the ReLU) to fold exactly")
            if len(consumers.get(src, [])) > 1:
                raise unsupported(layer, "the synapse before it has other consumers")
            tensors[lname], state[lname] = tensors[src], st
            pending[lname] = dict(pending[src], bn=layer)
        elif isinstance(layer, (keras.layers.ReLU, keras.layers.Activation)):
            if st in ("pre", "pre_first"):
                tensors[lname] = activation(src, lname)
            elif st == "sum":
                tensors[lname] = QuantActivation(q.KLevel(k), batch_norm=False, name=lname)(
                    tensors[src])
            elif st == "q":
                tensors[lname] = tensors[src]  # ReLU of a non-negative grid value: identity
            else:
                raise unsupported(layer, "a ReLU directly on the input")
            state[lname] = "q"
        elif isinstance(layer, _JOINS):
            for i in ins:
                if state[i] in ("pre", "pre_first"):
                    tensors[i] = activation(i, f"{i}_q", signed=True)
                    state[i] = "sum"
                elif state[i] == "image":
                    raise unsupported(layer, "an input of the join is the raw image")
            new = _clone(layer)
            tensors[lname] = new([tensors[i] for i in ins])
            state[lname] = "sum" if (isinstance(layer, keras.layers.Add)
                                     or any(state[i] == "sum" for i in ins)) else "q"
        else:  # pooling, flatten, reshape, dropout, padding: kept
            if st in ("pre", "pre_first"):
                raise unsupported(layer, "it sits between a synapse and its ReLU; place it after "
                                  "the ReLU (max / average pooling commute with it there)")
            if isinstance(layer, keras.layers.MaxPooling2D) and st == "sum":
                raise unsupported(layer, "max pooling of a signed residual sum; add a ReLU first")
            new = _clone(layer)
            tensors[lname] = new(tensors[src])
            state[lname] = st
    out_names = ([nodes[-1][0].name] if isinstance(model, keras.Sequential)
                 else _output_names(model.get_config()["output_layers"]))
    if len(out_names) != 1:
        raise ValueError("quantize_model: the model must have exactly one output")
    out = out_names[0]
    if state[out] != "head":
        raise ValueError(f"quantize_model: the output layer {out!r} must be a synapse without "
                         "ReLU (e.g. Dense(classes)); a ReLU at the output has no logits head")
    inp = [tensors[l.name] for l, _ in nodes if isinstance(l, keras.layers.InputLayer)]
    if len(inp) != 1:
        raise ValueError("quantize_model: the model must have exactly one input")
    twin = keras.Model(inp[0], tensors[out], name=name or f"{model.name}_quant")
    for layer, w in weights:
        layer.set_weights(w)
    return twin
