"""Splits and ``tf.data`` pipelines of registered datasets, with per-method preprocessing."""
import tensorflow as tf

from tfsnn.data import registry
from tfsnn.data.loaders import load


def preprocess(name, images, training, method="quant"):
    """Dataset ``name``'s ``method`` preprocessing of uint8 images ``[B, H, W, C]`` -> float32
    (the record's ``preprocessing[method]``; see ``tfsnn.data.preprocessing``)."""
    return registry.get(name).preprocessor(method)(images, training)


def input_shape(name, method="quant"):
    """Model input shape ``(H, W, C)`` after ``method``'s preprocessing (CIFAR-10 quant: 24x24)."""
    record = registry.get(name)
    record.preprocessor(method)
    return record.input_shape(method)


def pipeline(name, images, labels, batch_size, training, seed=None, drop_remainder=False,
             method="quant"):
    """A batched ``tf.data.Dataset`` of ``(float32 images, int64 labels)`` of dataset ``name``.

    Shuffles (reshuffling every epoch, seeded by ``seed``) when ``training``; preprocessing
    (``preprocess(name, batch, training, method)``) runs per batch after batching; prefetches.
    """
    fn = registry.get(name).preprocessor(method)
    prep = lambda x: fn(x, training)  # noqa: E731
    if not training:
        return batches(images, labels, batch_size, prep, drop_remainder)
    ds = tf.data.Dataset.from_tensor_slices((images, labels))
    ds = ds.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    return _map_batches(ds.batch(batch_size, drop_remainder=drop_remainder), prep)


def batches(images, labels, batch_size, preprocess_fn, drop_remainder=False):
    """Unshuffled ``(preprocess_fn(uint8 batch [B, ...]), labels)`` batches, prefetched (for
    evaluation with a method's own preprocessing)."""
    ds = tf.data.Dataset.from_tensor_slices((images, labels))
    return _map_batches(ds.batch(batch_size, drop_remainder=drop_remainder), preprocess_fn)


def _map_batches(ds, fn):
    ds = ds.map(lambda x, y: (fn(x), y), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def split(name, validation_examples=0, max_train_examples=0, max_test_examples=0):
    """``(train, val_or_None, test)`` ``(images, labels)`` arrays of a dataset.

    ``val`` is the last ``validation_examples`` images of the training split (at most a fifth of
    it); ``max_*_examples`` keep the first N of the (remaining) train / test images (0 = all).
    """
    (x, y), test = load(name)
    nval = min(validation_examples, len(x) // 5)
    train, val = (x[:len(x) - nval], y[:len(x) - nval]), (x[len(x) - nval:], y[len(x) - nval:])
    if max_train_examples:
        train = tuple(a[:max_train_examples] for a in train)
    if max_test_examples:
        test = tuple(a[:max_test_examples] for a in test)
    return train, (val if nval else None), test


def split_run(c):
    """``split`` per a run config's ``dataset``, ``validation_examples``,
    ``max_train_examples`` and ``max_test_examples``."""
    return split(c["dataset"], c["validation_examples"], c["max_train_examples"],
                 c["max_test_examples"])


def epoch_maker(x, y, batch_size, seed, preprocess_fn, drop_remainder=False,
                with_indices=False):
    """``epoch (int64 tensor) -> dataset`` of one epoch's ``(preprocess_fn(images), labels)``.

    The permutation depends only on ``(seed, epoch)``, so a resumed run sees exactly the batches
    of an uninterrupted one (see ``tfsnn.runs.epoch_dataset``). ``with_indices``: call
    ``preprocess_fn(images, indices [B], epoch)`` instead, for per-image random augmentation
    keyed by (image, epoch).
    """
    x, y = tf.constant(x), tf.constant(y)
    n = int(x.shape[0])

    def make(epoch):
        perm = tf.random.experimental.stateless_shuffle(
            tf.range(n), seed=tf.stack([tf.constant(seed, tf.int64), epoch]))

        def batch(i):
            images = tf.gather(x, i)
            images = preprocess_fn(images, i, epoch) if with_indices else preprocess_fn(images)
            return images, tf.gather(y, i)
        return tf.data.Dataset.from_tensor_slices(perm).batch(
            batch_size, drop_remainder=drop_remainder).map(batch)
    return make
