"""Plain-Keras architectures for ``tfsnn.quantize_model`` -> ``tfsnn.convert`` (any input size).

Built from stock Keras layers only (``Conv2D``, ``BatchNormalization`` with momentum
``BN_MOMENTUM``, ``ReLU``, pooling, ``Add``, ``Dense``); ``quantized=True`` returns
``tfsnn.quantize_model`` of it (ternary hidden kernels, k-level activations), which
``tfsnn.convert`` turns into an exact integer SNN.

* ``zoo_mlp``: Flatten -> 1000 -> 1000 -> classes (ReLU hidden layers with BN).
* ``zoo_vgg``: 2x(32C3-BN-ReLU) -> MaxPool2 -> 2x(64C3-BN-ReLU) -> MaxPool2 -> 128C3-BN-ReLU ->
  GlobalAveragePooling -> classes.
* ``zoo_resnet8``: 16C3 stem, three stages (16, 32, 64 channels, stride 1, 2, 2) of one basic
  block each (conv-BN-ReLU-conv-BN + shortcut, 1x1 conv-BN projection when the shape changes,
  ``Add`` then ReLU), GlobalAveragePooling -> classes (8 weight layers incl. the stem and the
  classifier). ``zoo_resnet20``: three blocks per stage (ResNet-20 of He et al.).
"""
import keras

from tfsnn.integers import check_integer

ZOO = ("zoo_mlp", "zoo_vgg", "zoo_resnet8", "zoo_resnet20")
# BatchNormalization momentum of the full-precision zoo models: 0.9, as their quantize_model twins
# (Keras' 0.99 let the FP VGG's moving statistics lag: 17 % / 66 % validation accuracy after 1 / 2
# epochs while training at 82 % / 90 %)
BN_MOMENTUM = 0.9


def _conv_bn_relu(x, filters, name, stride=1, relu=True):
    x = keras.layers.Conv2D(filters, 3, stride, padding="same", use_bias=False, name=name)(x)
    x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x) if relu else x


def mlp(input_shape=(28, 28, 1), num_classes=10, widths=(1000, 1000)):
    x = inputs = keras.Input(input_shape, name="image")
    x = keras.layers.Flatten(name="flatten")(x)
    for i, w in enumerate(widths, start=1):
        x = keras.layers.Dense(w, use_bias=False, name=f"fc{i}")(x)
        x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"fc{i}_bn")(x)
        x = keras.layers.ReLU(name=f"fc{i}_relu")(x)
        x = keras.layers.Dropout(0.2, name=f"drop{i}")(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes, name="output")(x), name="zoo_mlp")


def vgg(input_shape=(28, 28, 1), num_classes=10, widths=(32, 64, 128)):
    x = inputs = keras.Input(input_shape, name="image")
    for s, f in enumerate(widths[:2], start=1):
        x = _conv_bn_relu(x, f, f"conv{s}_1")
        x = _conv_bn_relu(x, f, f"conv{s}_2")
        x = keras.layers.MaxPooling2D(2, name=f"pool{s}")(x)
    x = _conv_bn_relu(x, widths[2], "conv3_1")
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes, name="output")(x), name="zoo_vgg")


def resnet(input_shape=(28, 28, 1), num_classes=10, blocks_per_stage=1, name="zoo_resnet8",
           widths=(16, 32, 64)):
    check_integer(blocks_per_stage, "blocks_per_stage", 1)
    x = inputs = keras.Input(input_shape, name="image")
    x = _conv_bn_relu(x, widths[0], "stem")
    for s, f in enumerate(widths, start=1):
        for b in range(1, blocks_per_stage + 1):
            stride = 2 if (s > 1 and b == 1) else 1
            n = f"s{s}b{b}"
            h = _conv_bn_relu(x, f, f"{n}_conv1", stride)
            h = _conv_bn_relu(h, f, f"{n}_conv2", relu=False)
            if stride != 1 or int(x.shape[-1]) != f:
                x = keras.layers.Conv2D(f, 1, stride, use_bias=False, name=f"{n}_proj")(x)
                x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{n}_proj_bn")(x)
            x = keras.layers.Add(name=f"{n}_add")([h, x])
            x = keras.layers.ReLU(name=f"{n}_relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes, name="output")(x), name=name)


def zoo_model(name, input_shape=(28, 28, 1), num_classes=10, quantized=True, k=0, ternary=True,
              widths=None):
    """Build a zoo architecture (see the module docstring) for ``input_shape`` (e.g. 28x28x1 or
    32x32x3); ``quantized`` returns its ``quantize_model`` twin named ``name``, else the
    full-precision model named ``<name>_fp``. ``widths``: hidden widths (MLP: units per hidden
    layer; VGG: the 3 stage channel counts; ResNet: the 3 stage channel counts); default the
    module docstring's."""
    if name not in ZOO:
        raise ValueError(f"unknown zoo model {name!r}; known: {list(ZOO)}")
    w = {} if widths is None else {"widths": tuple(check_integer(v, "widths", 1) for v in widths)}
    if name != "zoo_mlp" and widths is not None and len(w["widths"]) != 3:
        raise ValueError(f"widths of {name} must be 3 channel counts, got {widths!r}")
    if name == "zoo_mlp":
        m = mlp(input_shape, num_classes, **w)
    elif name == "zoo_vgg":
        m = vgg(input_shape, num_classes, **w)
    else:
        m = resnet(input_shape, num_classes, 1 if name == "zoo_resnet8" else 3, name, **w)
    if not quantized:
        return keras.Model(m.input, m.output, name=f"{name}_fp")
    from tfsnn.conversion.quantize import quantize_model
    return quantize_model(m, k=k, ternary=ternary, name=name)
