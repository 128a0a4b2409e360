"""Accuracy metrics on spike-count outputs ``[B, classes]`` (proxy learning reports all three).

``y_true``: integer labels ``[B]`` or one-hot ``[B, K]``. They differ in how ties of the maximal
count are scored: ``strict_accuracy`` (a tie is wrong), ``lenient_accuracy`` (a tie that includes
the true class is right), ``argmax_accuracy`` (the first maximal index wins).
"""
import numpy as np
import tensorflow as tf


def strict_accuracy(y_true, y_pred):
    """1 where the true class's count is the unique maximum (ties are wrong). ``y_true``: int
    labels ``[B]`` or one-hot ``[B, K]``."""
    y_true, y_pred = _labels_counts(y_true, y_pred)
    true_count = tf.gather(y_pred, y_true, batch_dims=1)
    n_max = tf.reduce_sum(tf.cast(y_pred >= tf.reduce_max(y_pred, -1, keepdims=True), tf.int32),
                          -1)
    return tf.cast((true_count >= tf.reduce_max(y_pred, -1)) & (n_max == 1), tf.float32)


def lenient_accuracy(y_true, y_pred):
    """1 where the true class's count equals the maximum (ties, even all-silent rows, count as
    correct: the notebook's "Final Result" metric)."""
    y_true, y_pred = _labels_counts(y_true, y_pred)
    true_count = tf.gather(y_pred, y_true, batch_dims=1)
    return tf.cast(true_count >= tf.reduce_max(y_pred, -1), tf.float32)


def argmax_accuracy(y_true, y_pred):
    """1 where ``argmax`` (first maximal index wins ties) is the true class (per-epoch metric of
    the notebook)."""
    y_true, y_pred = _labels_counts(y_true, y_pred)
    return tf.cast(tf.argmax(y_pred, -1, output_type=tf.int32) == y_true, tf.float32)


def tie_breakdown(y_true, counts):
    """Where the strict metric loses to the lenient one: ``counts`` ``[N, K]`` integer spike
    counts, ``y_true`` int labels ``[N]``. Returns a dict: ``tied_fraction`` (the true class
    shares the maximal count with another class: lenient minus strict), ``top_count_histogram``
    (images per maximal count 0..max) and ``tied_by_top_count`` (tied images per maximal
    count)."""
    counts = np.rint(np.asarray(counts)).astype(np.int64)
    y = np.asarray(y_true).reshape(-1).astype(np.int64)
    if counts.ndim != 2 or len(counts) != len(y):
        raise ValueError(f"need counts [N, K] and labels [N], got {counts.shape} and {y.shape}")
    top = counts.max(1)
    tied = (counts[np.arange(len(y)), y] == top) & ((counts == top[:, None]).sum(1) > 1)
    n = int(top.max()) + 1 if len(top) else 1
    return {"tied_fraction": float(tied.mean()) if len(y) else 0.0,
            "top_count_histogram": np.bincount(top, minlength=n).tolist(),
            "tied_by_top_count": np.bincount(top[tied], minlength=n).tolist()}


def _labels_counts(y_true, y_pred):
    y_pred = tf.convert_to_tensor(y_pred)
    y_true = tf.convert_to_tensor(y_true)
    if y_true.shape.rank == y_pred.shape.rank:
        y_true = tf.argmax(y_true, -1)
    return tf.cast(tf.reshape(y_true, [-1]), tf.int32), y_pred
