"""``--strategy multi_worker`` for the training procedures: a ``MultiWorkerMirroredStrategy``
that Keras 3's ``model.fit`` can drive, and one run directory per worker.

Keras 3.15's TensorFlow trainer calls ``strategy.reduce`` in two ways the TF strategy rejects
under multi-worker collectives (``keras.src.backend.tensorflow.trainer``): on the whole first
``(x, y)`` batch, a nest (``_maybe_symbolic_build``), and with ``axis=0`` on the scalar
per-step logs (``reduce_per_replica``); ``fit`` then fails before or at its first step.
``MultiWorkerStrategy.reduce`` reduces each leaf of a nest, and a scalar over the replicas
(``axis=None``): the result Keras asked for. Gradients are unaffected: Keras all-reduces them
(SUM) in the optimizer, as with ``MirroredStrategy``.

The cluster comes from ``TF_CONFIG`` (``{"cluster": {"worker": ["host:port", ...]},
"task": {"type": "worker", "index": i}}``); every worker runs the same command. The chief
(task ``chief``, or ``worker`` 0 when there is no chief) writes the run directory; worker ``i``
writes its own ``<run_dir>.worker<i>`` (same files; its checkpoints let ``--resume`` restart
every worker from the same epoch).
"""
import tensorflow as tf

from tfsnn import runs


class MultiWorkerStrategy(tf.distribute.MultiWorkerMirroredStrategy):
    """``MultiWorkerMirroredStrategy`` whose ``reduce`` takes nests and scalar values (above)."""

    def reduce(self, reduce_op, value, axis):
        def one(v):
            rank = self.experimental_local_results(v)[0].shape.rank
            return super(MultiWorkerStrategy, self).reduce(reduce_op, v,
                                                           None if rank == 0 else axis)
        return tf.nest.map_structure(one, value)


def get_strategy(name):
    """The strategy for ``--strategy`` (``default | mirrored | multi_worker``; see
    ``tfsnn.runs.get_strategy``); ``multi_worker`` is ``MultiWorkerStrategy`` (reads
    ``TF_CONFIG``). Create it before any other TensorFlow work of the process."""
    return MultiWorkerStrategy() if name == "multi_worker" else runs.get_strategy(name)


def task(strategy):
    """``(task_type, task_id)`` of this process under a multi-worker strategy, else None."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or resolver is None \
            or not resolver.cluster_spec().as_dict():
        return None
    return resolver.task_type, resolver.task_id


def is_chief(strategy):
    """Whether this process writes the run directory (always, without a cluster)."""
    t = task(strategy)
    if t is None:
        return True
    has_chief = "chief" in strategy.cluster_resolver.cluster_spec().as_dict()
    return t[0] == "chief" or (not has_chief and t[0] == "worker" and t[1] == 0)


def worker_run_dir(run_dir, strategy):
    """``run_dir`` for the chief (and without a cluster); ``<run_dir>.<type><id>`` for the
    other workers."""
    if is_chief(strategy):
        return run_dir
    task_type, task_id = task(strategy)
    return f"{str(run_dir).rstrip('/')}.{task_type}{task_id}"
