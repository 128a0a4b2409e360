"""Per-method preprocessing of uint8 image batches ``[B, H, W, C]`` -> float32.

Each method reproduces its paper's original code, so the scales differ on purpose:

* ``quant_mnist`` / ``quant_cifar10``: ALL_INT_SNN (docs/specs/all_int_snn.md §1.5): ``/256``;
  CIFAR-10 cropped to ``CIFAR_CROP`` with colour augmentation and per-image standardization.
* ``snn_mnist`` / ``snn_cifar10``: spike_bp and hybrid (docs/specs/hybrid_and_spike_bp.md §2.4,
  §3.8): ``/255``; CIFAR-10 ``/127.5 - 1`` with pad-4 crop and flip.
* ``to_float``: iir and proxy (docs/specs/iir_and_proxy.md §A.4, §B.5): ``/255``
  (PyTorch ``ToTensor``); proxy's training crop is ``proxy_crop_pad``.

Every ``fn(images, training)`` carries ``fn.value_range``, the ``(low, high)`` of its outputs.
A dataset names its functions per method in its ``tfsnn.data.registry.Dataset`` record.
"""
import math

import tensorflow as tf

CIFAR_CROP = 24  # ALL_INT_SNN's CIFAR-10 input side (pixels)


def _values(low, high):
    """Mark a preprocessing function with the range of its outputs."""
    def mark(fn):
        fn.value_range = (low, high)
        return fn
    return mark


@_values(0.0, 255 / 256)
def quant_mnist(images, training):
    """ALL_INT_SNN MNISTs: ``pixels / 256`` in [0, 0.996] (``training`` unused)."""
    return tf.cast(images, tf.float32) / 256.0


@_values(-math.inf, math.inf)
def quant_cifar10(images, training):
    """ALL_INT_SNN CIFAR-10 ``[B, 32, 32, 3]`` -> ``[B, 24, 24, 3]``, per-image standardized.

    Training: random 24x24 crop, horizontal flip, brightness (max delta 63), contrast
    [0.2, 1.8]; otherwise the central 24x24 crop.
    """
    x = tf.cast(images, tf.float32)
    if training:
        b = tf.shape(x)[0]
        x = tf.image.random_crop(x, tf.stack([b, CIFAR_CROP, CIFAR_CROP, 3]))
        x = tf.map_fn(_cifar_color_augment, x)
    else:
        x = tf.image.resize_with_crop_or_pad(x, CIFAR_CROP, CIFAR_CROP)
    return tf.image.per_image_standardization(x)


def _cifar_color_augment(img):
    img = tf.image.random_flip_left_right(img)
    img = tf.image.random_brightness(img, max_delta=63)
    return tf.image.random_contrast(img, 0.2, 1.8)


@_values(0.0, 1.0)
def snn_mnist(images, training):
    """spike_bp / hybrid MNISTs: ``pixels / 255`` in [0, 1] (``training`` unused)."""
    return tf.cast(images, tf.float32) / 255.0


@_values(-1.0, 1.0)
def snn_cifar10(images, training):
    """spike_bp / hybrid CIFAR-10: ``pixels / 127.5 - 1`` in [-1, 1] (Rathi's normalisation;
    ``|x|`` is a valid spike rate); training: random 32x32 crop of the 4-padded image, then
    horizontal flip."""
    x = tf.cast(images, tf.float32) / 127.5 - 1.0
    if training:
        b = tf.shape(x)[0]
        x = tf.pad(x, [[0, 0], [4, 4], [4, 4], [0, 0]])
        x = tf.image.random_crop(x, tf.stack([b, 32, 32, 3]))
        x = tf.image.random_flip_left_right(x)
    return x


@_values(0.0, 1.0)
def to_float(images, training=False):
    """iir / proxy: ``pixels / 255`` in [0, 1], as ``ToTensor`` (``training`` unused)."""
    return tf.cast(images, tf.float32) / 255.0


def proxy_augment(images, seeds):
    """RandomCrop(26) then Pad(1) per image, float ``[B, 28, 28, C]``; ``seeds`` ``[B, 2]``."""
    def one(args):
        img, s = args
        crop = tf.image.stateless_random_crop(img, [26, 26, tf.shape(img)[-1]], s)
        return tf.pad(crop, [[1, 1], [1, 1], [0, 0]])
    return tf.map_fn(one, (images, seeds), fn_output_signature=images.dtype)


def proxy_crop_pad(images, indices, epoch, seed):
    """``proxy_augment`` with per-image seeds ``(index, epoch + 7919 seed)``: the crop of an image
    depends only on (its index ``[B]``, ``epoch``, ``seed``), so a resumed run sees the same."""
    s = tf.stack([tf.cast(indices, tf.int64), tf.fill(tf.shape(indices), epoch + 7919 * seed)], 1)
    return proxy_augment(images, s)
