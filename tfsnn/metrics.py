"""Accuracy metrics on spike-count outputs ``[B, classes]`` (proxy learning reports all three).

``y_true``: integer labels ``[B]`` or one-hot ``[B, K]``. They differ in how ties of the maximal
count are scored: ``strict_accuracy`` (a tie is wrong), ``lenient_accuracy`` (a tie that includes
the true class is right), ``argmax_accuracy`` (the first maximal index wins).
"""
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


def _labels_counts(y_true, y_pred):
    y_pred = tf.convert_to_tensor(y_pred)
    y_true = tf.convert_to_tensor(y_true)
    if y_true.shape.rank == y_pred.shape.rank:
        y_true = tf.argmax(y_true, -1)
    return tf.cast(tf.reshape(y_true, [-1]), tf.int32), y_pred
