"""The proxy-learning network (Kheradpisheh et al. 2022, "Spiking neural networks trained via
proxy", IEEE Access 10): ``ProxyNet`` is one Keras model holding the shared kernels and BatchNorm
gamma/beta; its forward value is the IF SNN's output spike counts and, in training, its gradient
is the ReLU ANN's (``o = a + stop_gradient(c - a)``). ``proxy_fashion_mnist()`` builds the
Fashion-MNIST network (19,599,744 parameters at width 128).
"""
import keras
import tensorflow as tf

from tfsnn.layers.encoders import repeat_in_time
from tfsnn.layers.neurons.iir import torch_kernel_init
from tfsnn.layers.neurons.proxy import ProxyBatchNorm, if_spikes
from tfsnn.metrics import argmax_accuracy, lenient_accuracy, strict_accuracy
from tfsnn.timeaxis import fold_time, unfold_time


@keras.saving.register_keras_serializable(package="tfsnn")
class ProxyNet(keras.Model):
    """Proxy learning on one set of shared weights (docs/specs/iir_and_proxy.md §B, §C.3).

    ANN: ``conv1 -> BN -> ReLU -> [conv -> BN -> ReLU -> MaxPool2] x2 -> flatten -> FC(20w) ->
    ReLU -> FC(9w) -> ReLU -> FC(2w) -> ReLU -> FC(classes)`` (w = ``width``, 128 in the paper;
    no biases). SNN: the same kernels and BN gamma/beta, every ReLU an IF neuron (``threshold``,
    ``v >= theta`` fires, hard reset, ``if_spikes``) plus one after the last FC; the static
    ``BN(conv1(x))`` is a constant current over ``timesteps`` steps; output = spike counts
    ``[B, classes]`` in {0..T}. BN statistics are per branch (``ProxyBatchNorm``); the SNN's are
    per time step.

    * ``call(x)`` (inference): the SNN counts. ``call(x, training=True)``: ``a + sg(c - a)``.
    * ``train_step``: SNN forward outside the tape, ANN under it, ``L = mean((o - Y)^2)`` on
      ``Y = target_spikes * one_hot(y)`` (1: the notebook's; ``rate_target``: ``o/T`` against the
      one-hot instead), gradient ``+ weight_decay * w``
      (PyTorch's coupled L2), one optimizer step. BN runs in training mode (batch statistics,
      moving statistics updated) while the weight ``bn_update`` is 1; set it to 0 after the first
      epoch (``tfsnn.training.proxy.FreezeBatchNorm``) to freeze both branches' statistics
      while gamma/beta train on.
    * Metrics: loss, strict (unique max), argmax (first index wins ties) and lenient (ties
      correct) accuracy of the SNN counts; labels are integer class ids.
    """

    def __init__(self, width=128, timesteps=15, threshold=2.0, classes=10,
                 input_shape=(28, 28, 1), weight_decay=1e-6, rate_target=False, target_spikes=1.0,
                 **kwargs):
        super().__init__(**kwargs)
        self.width, self.timesteps, self.threshold = int(width), int(timesteps), float(threshold)
        self.classes, self.image_shape = int(classes), tuple(input_shape)
        self.weight_decay, self.rate_target = float(weight_decay), bool(rate_target)
        self.target_spikes = float(target_spikes)
        if not 0 < self.target_spikes <= self.timesteps:
            raise ValueError(f"target_spikes={target_spikes}: must be in (0, timesteps="
                             f"{self.timesteps}]")
        if self.rate_target and self.target_spikes != 1:
            raise ValueError("rate_target compares o/T with the one-hot; target_spikes must "
                             "stay 1 with it")
        ki = torch_kernel_init
        self.convs = [keras.layers.Conv2D(self.width, 3, padding="same", use_bias=False,
                                          kernel_initializer=ki(), name=f"conv{i}")
                      for i in (1, 2, 3)]
        self.bns = [ProxyBatchNorm(name=f"bn{i}") for i in (1, 2, 3)]
        self.fcs = [keras.layers.Dense(u, use_bias=False, kernel_initializer=ki(), name=f"fc{i}")
                    for i, u in enumerate((20 * self.width, 9 * self.width, 2 * self.width,
                                           self.classes), start=1)]
        self.bn_update = self.add_weight(name="bn_update", shape=(), initializer="ones",
                                         trainable=False)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.acc_metrics = [keras.metrics.MeanMetricWrapper(f, name=f.__name__) for f in
                            (strict_accuracy, argmax_accuracy, lenient_accuracy)]
        self._build_all()

    def _build_all(self):
        h, w, c = self.image_shape
        shapes = [(None, h, w, c), (None, h, w, self.width), (None, h // 2, w // 2, self.width)]
        for conv, bn, s in zip(self.convs, self.bns, shapes):
            conv.build(s)
            bn.build((*s[:3], self.width))
        n = self.width * (h // 4) * (w // 4)
        for fc in self.fcs:
            fc.build((None, n))
            n = fc.units
        self.built = True

    @property
    def metrics(self):
        return [self.loss_tracker, *self.acc_metrics]

    def bn_training(self):
        """Scalar bool: BatchNorm in training mode (epoch 0) or frozen (later epochs)."""
        return self.bn_update > 0.5

    def ann(self, x, bn_training=False):
        """ANN logits ``[B, classes]`` (ReLU network)."""
        h = tf.nn.relu(self.bns[0](self.convs[0](x), branch="ann", batch_stats=bn_training))
        for conv, bn in zip(self.convs[1:], self.bns[1:]):
            h = tf.nn.relu(bn(conv(h), branch="ann", batch_stats=bn_training))
            h = tf.nn.max_pool2d(h, 2, 2, "VALID")
        h = tf.reshape(h, [tf.shape(h)[0], -1])
        for fc in self.fcs[:-1]:
            h = tf.nn.relu(fc(h))
        return self.fcs[-1](h)

    def snn_record(self, x, bn_training=False):
        """One SNN pass, recorded per synaptic layer (what ``tfsnn.activity`` counts).

        Returns ``[(layer, input, spikes)]`` for conv1..3, fc1..4 in order: ``input`` is what
        the layer receives, ``spikes`` ``[B, T, ...]`` its IF neurons' output (before pooling).
        conv1's input is the image once, ``[B, 1, H, W, C]`` (``BN(conv1(x))`` is computed once
        and held as a constant current); conv2's is conv1's spikes, conv3's and fc1's the
        previous spikes after the 2x2 max pool (an OR) and, for fc1, the flatten
        (``[B, T, n]``). The last entry's spikes are the output spikes ``[B, T, classes]``.
        """
        x = tf.stop_gradient(tf.convert_to_tensor(x))
        record = self._snn_layers(self._snn_current(x, bn_training), bn_training)
        return [(self.convs[0], x[:, None], record[0][2]), *record[1:]]

    def _snn_current(self, x, bn_training):
        """The SNN's constant input current ``BN(conv1(x))`` ``[B, H, W, width]``."""
        return self.bns[0](self.convs[0](x), branch="snn", batch_stats=bn_training)

    def _snn_layers(self, i0, bn_training):
        """``snn_record`` from the input current ``i0`` on (conv1's input left ``None``)."""
        th, t = self.threshold, self.timesteps
        b = tf.shape(i0)[0]
        s = if_spikes(repeat_in_time(i0, t), th)
        record = [(self.convs[0], None, s)]
        for conv, bn in zip(self.convs[1:], self.bns[1:]):
            z = unfold_time(conv(fold_time(s)), b, t)
            s_in, s = s, if_spikes(bn(z, branch="snn", batch_stats=bn_training, time_axis=True),
                                   th)
            record.append((conv, s_in, s))
            s = unfold_time(tf.nn.max_pool2d(fold_time(s), 2, 2, "VALID"), b, t)
        s = tf.reshape(s, [b, t, -1])
        for fc in self.fcs:
            s_in, s = s, if_spikes(fc(s), th)
            record.append((fc, s_in, s))
        return record

    def snn(self, x, bn_training=False):
        """SNN output spike counts ``[B, classes]`` (no gradient): the output spikes of
        ``snn_record`` summed over time. Everything after ``BN(conv1(x))`` (the T-step IF
        loops, conv2/3 and the FCs on all B*T frames) runs XLA-compiled (2.4x faster proxy
        training steps at width 16 on CPU, ``bench/train_throughput.py --network proxy``);
        conv1's BN statistics stay those of the plain graph, as the ANN branch computes them."""
        x = tf.stop_gradient(tf.convert_to_tensor(x))
        return tf.stop_gradient(self._snn_counts(self._snn_current(x, bn_training), bn_training))

    @tf.function(jit_compile=True, autograph=False)
    def _snn_counts(self, i0, bn_training):
        return tf.reduce_sum(self._snn_layers(i0, bn_training)[-1][2], axis=1)

    def call(self, x, training=False):
        if not training:
            return self.snn(x, False)
        flag = self.bn_training()
        c = self.snn(x, flag)
        a = self.ann(x, flag)
        return a + tf.stop_gradient(c - a)

    def proxy_loss(self, y, o):
        """``mean((o - target_spikes * one_hot(y))^2)`` over B*classes (``o/T`` against the
        one-hot with ``rate_target``)."""
        o = o / self.timesteps if self.rate_target else o
        y1 = tf.one_hot(tf.cast(tf.reshape(y, [-1]), tf.int32), self.classes, dtype=o.dtype)
        return tf.reduce_mean(tf.square(o - self.target_spikes * y1))

    def train_step(self, data):
        x, y = data[0], data[1]
        flag = self.bn_training()
        c = self.snn(x, flag)
        with tf.GradientTape() as tape:
            a = self.ann(x, flag)
            o = a + tf.stop_gradient(c - a)
            loss = self.proxy_loss(y, o)
        variables = self.trainable_variables
        grads = tape.gradient(loss, variables)
        if self.weight_decay:
            grads = [g + self.weight_decay * v for g, v in zip(grads, variables)]
        self.optimizer.apply(grads, variables)
        return self._update_metrics(loss, y, c)

    def test_step(self, data):
        x, y = data[0], data[1]
        c = self.snn(x, False)
        return self._update_metrics(self.proxy_loss(y, c), y, c)

    def _update_metrics(self, loss, y, counts):
        self.loss_tracker.update_state(loss)
        for m in self.acc_metrics:
            m.update_state(y, counts)
        return {m.name: m.result() for m in self.metrics}

    def get_config(self):
        return {"width": self.width, "timesteps": self.timesteps, "threshold": self.threshold,
                "classes": self.classes, "input_shape": list(self.image_shape),
                "weight_decay": self.weight_decay, "rate_target": self.rate_target,
                "target_spikes": self.target_spikes,
                "name": self.name}


def proxy_fashion_mnist(width=128, timesteps=15, threshold=2.0, **kwargs):
    """The Fashion-MNIST proxy network (width 128: 19,599,744 shared parameters)."""
    return ProxyNet(width=width, timesteps=timesteps, threshold=threshold, classes=10,
                    input_shape=(28, 28, 1), **kwargs)
