"""Architectures of the IIR-SNN and proxy-learning papers (spec iir_and_proxy.md §A.6, §B.4).

IIR nets (Fang et al. 2020), functional Keras models, image input ``[B, 28, 28, 1]`` in [0, 1]
(``x/255``), spike-count logits ``[B, 10]`` in {0..T} out (softmax cross-entropy on counts):

* ``snn_mlp_1``: 784 -> IIR -> 500 -> Drop -> IIR -> 500 -> Drop -> IIR -> 10 -> sum_t
  (653,362 trainable). ``snn_mlp_2``: the same with first-order low-pass synapses (649,794).
* ``snn_conv_1``: IIR -> SConv32 -> IIR -> SConv32 -> IIR -> SConv64 -> IIR -> MP2(PSP) -> IIR ->
  SConv64 -> IIR -> MP2(PSP) -> flatten -> IIR -> 512 -> Drop -> IIR -> 10 -> sum_t (2,065,882).
* ``associative_memory_net``: spikes ``[B, 300, 300]`` -> IIR -> 500 -> IIR -> 200 -> IIR ->
  500 -> IIR -> 300 output spikes ``[B, T, 300]`` (tau_m = 8, tau_s = 2; 506,000 trainable).

``encoding``: ``"copy"`` (the analog image at every step, ``DirectEncoder``) or ``"poisson"``
(``PoissonEncoder``, spike iff ``x > U(0,1)``, redrawn every call). ``state``: ``"zero"`` or
``"carry"`` (needs ``batch_size``; see ``tfsnn.layers.filters``).

Proxy learning (Kheradpisheh et al.): ``ProxyNet`` is one Keras model holding the shared
kernels and BatchNorm gamma/beta; its forward value is the IF SNN's output spike counts and, in
training, its gradient is the ReLU ANN's (``o = a + stop_gradient(c - a)``).
``proxy_fashion_mnist()`` builds the Fashion-MNIST network (19,599,744 parameters at width 128).
"""
import keras
import tensorflow as tf

from tfsnn.layers.encoders import DirectEncoder, PoissonEncoder, repeat_in_time
from tfsnn.layers.filters import DualExpIIR, DualExpReadoutFilter, FirstOrderLowPass
from tfsnn.layers.iir import (IIRSpikingConv2D, IIRSpikingDense, ProxyBatchNorm, PSPMaxPool2D,
                              if_spikes, torch_kernel_init)
from tfsnn.layers.neurons import SumReadout

ENCODINGS = ("copy", "poisson")
IIR_MODELS = ("snn_mlp_1", "snn_mlp_2", "snn_conv_1")


def _encoder(encoding, timesteps, name="encoder"):
    if encoding == "copy":
        return DirectEncoder(timesteps, name=name)
    if encoding == "poisson":
        return PoissonEncoder(timesteps, gain=1.0, strict=True, name=name)
    raise ValueError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")


def _synapse(kind, tau_m, tau_s, sk, name, max_radius):
    if kind == "dual_exp":
        return DualExpIIR(tau_m, tau_s, name=name, max_radius=max_radius, **sk)
    return FirstOrderLowPass(tau_m, name=name, max_radius=max_radius, **sk)


def _mlp(name, synapse, timesteps, encoding, tau_m, tau_s, dropout, state, batch_size,
         input_shape, classes, filter_radius):
    sk = dict(state=state, batch_size=batch_size)
    inp = keras.Input(input_shape, batch_size=batch_size if state == "carry" else None,
                      name="image")
    h = _encoder(encoding, timesteps)(keras.layers.Flatten(name="flatten")(inp))
    for i, units in enumerate((500, 500, classes), start=1):
        h = _synapse(synapse, tau_m, tau_s, sk, f"synapse{i}", filter_radius)(h)
        h = IIRSpikingDense(units, tau_m=tau_m, name=f"neuron{i}", **sk)(h)
        if i < 3 and dropout:
            h = keras.layers.Dropout(dropout, name=f"dropout{i}")(h)
    return keras.Model(inp, SumReadout(name="spike_count")(h), name=name)


def snn_mlp_1(timesteps=25, encoding="copy", tau_m=4.0, tau_s=1.0, dropout=0.3, state="zero",
              batch_size=None, input_shape=(28, 28, 1), classes=10, filter_radius=None):
    """The dual-exponential IIR MLP (784-500-500-10), spike-count logits. ``filter_radius``:
    the synapses' ``max_radius`` (None: free coefficients, as the original)."""
    return _mlp("snn_mlp_1", "dual_exp", timesteps, encoding, tau_m, tau_s, dropout, state,
                batch_size, input_shape, classes, filter_radius)


def snn_mlp_2(timesteps=25, encoding="copy", tau_m=4.0, tau_s=1.0, dropout=0.3, state="zero",
              batch_size=None, input_shape=(28, 28, 1), classes=10, filter_radius=None):
    """``snn_mlp_1`` with first-order low-pass synapses (tau = tau_m; tau_s unused)."""
    return _mlp("snn_mlp_2", "low_pass", timesteps, encoding, tau_m, tau_s, dropout, state,
                batch_size, input_shape, classes, filter_radius)


def snn_conv_1(timesteps=25, encoding="copy", tau_m=4.0, tau_s=1.0, dropout=0.3, state="zero",
               batch_size=None, input_shape=(28, 28, 1), classes=10, filter_radius=None):
    """The IIR conv net of snn_conv_1_mnist (max pools act on the PSP, which is then filtered
    again, as upstream). Flattening is Keras (H, W, C) order."""
    sk = dict(state=state, batch_size=batch_size)
    inp = keras.Input(input_shape, batch_size=batch_size if state == "carry" else None,
                      name="image")
    h = _encoder(encoding, timesteps)(inp)
    n = 0

    def iir(h):
        nonlocal n
        n += 1
        return DualExpIIR(tau_m, tau_s, name=f"synapse{n}", max_radius=filter_radius, **sk)(h)

    h = iir(h)
    for i, f in enumerate((32, 32, 64), start=1):
        h = iir(IIRSpikingConv2D(f, 3, padding="same", tau_m=tau_m, name=f"conv{i}", **sk)(h))
    h = iir(PSPMaxPool2D(2, name="pool1")(h))
    h = iir(IIRSpikingConv2D(64, 3, padding="same", tau_m=tau_m, name="conv4", **sk)(h))
    h = PSPMaxPool2D(2, name="pool2")(h)
    h = keras.layers.Reshape((timesteps, h.shape[2] * h.shape[3] * h.shape[4]), name="flatten")(h)
    h = IIRSpikingDense(512, tau_m=tau_m, name="fc1", **sk)(iir(h))
    if dropout:
        h = keras.layers.Dropout(dropout, name="dropout1")(h)
    h = IIRSpikingDense(classes, tau_m=tau_m, name="fc2", **sk)(iir(h))
    return keras.Model(inp, SumReadout(name="spike_count")(h), name="snn_conv_1")


IIR_BUILDERS = {"snn_mlp_1": snn_mlp_1, "snn_mlp_2": snn_mlp_2, "snn_conv_1": snn_conv_1}


def iir_model(name, **kwargs):
    """An IIR classification model by name (``IIR_MODELS``)."""
    if name not in IIR_BUILDERS:
        raise ValueError(f"model must be one of {IIR_MODELS}, got {name!r}")
    return IIR_BUILDERS[name](**kwargs)


def associative_memory_net(timesteps=300, channels=300, widths=(500, 200, 500), tau_m=8.0,
                           tau_s=2.0, state="zero", batch_size=None, filter_radius=None):
    """``[B, T, channels]`` spikes -> IIR -> 500 -> IIR -> 200 -> IIR -> 500 -> IIR -> channels:
    output spikes ``[B, T, channels]`` (filter them with ``DualExpReadoutFilter(8, 2)`` for the
    loss). ``filter_radius``: the synapses' ``max_radius`` (None: free, as the original)."""
    sk = dict(state=state, batch_size=batch_size)
    inp = keras.Input((timesteps, channels), batch_size=batch_size if state == "carry" else None,
                      name="spikes")
    h = inp
    for i, units in enumerate((*widths, channels), start=1):
        h = DualExpIIR(tau_m, tau_s, name=f"synapse{i}", max_radius=filter_radius, **sk)(h)
        h = IIRSpikingDense(units, tau_m=tau_m, name=f"neuron{i}", **sk)(h)
    return keras.Model(inp, h, name="associative_memory")


@keras.saving.register_keras_serializable(package="tfsnn")
class FilteredMSE(keras.losses.Loss):
    """MSE between ``filter(y_pred)`` and ``filter(y_true)``, both ``[B, T, N]`` spike trains,
    with the fixed normalised dual-exponential filter (``tau_m``, ``tau_s``); mean over B*T*N."""

    def __init__(self, tau_m=8.0, tau_s=2.0, name="filtered_mse", **kwargs):
        super().__init__(name=name, **kwargs)
        self.tau_m, self.tau_s = float(tau_m), float(tau_s)
        self.filter = DualExpReadoutFilter(self.tau_m, self.tau_s)

    def call(self, y_true, y_pred):
        y_pred = tf.convert_to_tensor(y_pred)
        f_true = self.filter(tf.cast(y_true, y_pred.dtype))
        return tf.reduce_mean(tf.square(self.filter(y_pred) - f_true), axis=[1, 2])

    def get_config(self):
        return {**super().get_config(), "tau_m": self.tau_m, "tau_s": self.tau_s}


def stepwise_mlp(model, images, training=False):
    """Reference: run an ``snn_mlp_1``/``snn_mlp_2`` (copy encoding, zero states) step by step,
    every layer once per time step on ``[B, features]`` (no time folding). Uses the model's own
    weights; returns the spike-count logits ``[B, classes]``. Dropout draws a fresh mask per
    step and layer when ``training``."""
    layers = {l.name: l for l in model.layers}
    timesteps = layers["encoder"].timesteps
    x = tf.reshape(tf.convert_to_tensor(images, tf.float32), [tf.shape(images)[0], -1])
    syn = [layers[f"synapse{i}"] for i in (1, 2, 3)]
    neu = [layers[f"neuron{i}"] for i in (1, 2, 3)]
    drop = [layers.get(f"dropout{i}") for i in (1, 2)] + [None]
    batch = tf.shape(x)[0]
    states = []
    n_in = x.shape[-1]
    for s, nrn in zip(syn, neu):
        z = tf.zeros([batch, n_in])
        states.append([z, z, tf.zeros([batch, nrn.units])])
        n_in = nrn.units
    count = 0.0
    for _ in range(timesteps):
        h = x
        for k, (s, nrn, d) in enumerate(zip(syn, neu, drop)):
            y1, y2, r = states[k]
            if isinstance(s, DualExpIIR):
                y = s.alpha_1 * y1 + s.alpha_2 * y2 + s.beta_1 * h
            else:
                y = s.alpha * y1 + h
            z = tf.matmul(y, nrn.kernel) + nrn.bias
            spk = nrn.surrogate.spike(z - r - nrn.threshold)
            states[k] = [y, y1, nrn.decay * r + nrn.reset_amp * spk]
            h = d(spk, training=training) if d is not None else spk
        count = count + h
    return count


# --------------------------------------------------------------------------- proxy learning

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


@keras.saving.register_keras_serializable(package="tfsnn")
class ProxyNet(keras.Model):
    """Proxy learning on one set of shared weights (spec §B, §C.3).

    ANN: ``conv1 -> BN -> ReLU -> [conv -> BN -> ReLU -> MaxPool2] x2 -> flatten -> FC(20w) ->
    ReLU -> FC(9w) -> ReLU -> FC(2w) -> ReLU -> FC(classes)`` (w = ``width``, 128 in the paper;
    no biases). SNN: the same kernels and BN gamma/beta, every ReLU an IF neuron (``threshold``,
    ``v >= theta`` fires, hard reset, ``if_spikes``) plus one after the last FC; the static
    ``BN(conv1(x))`` is a constant current over ``timesteps`` steps; output = spike counts
    ``[B, classes]`` in {0..T}. BN statistics are per branch (``ProxyBatchNorm``); the SNN's are
    per time step.

    * ``call(x)`` (inference): the SNN counts. ``call(x, training=True)``: ``a + sg(c - a)``.
    * ``train_step``: SNN forward outside the tape, ANN under it, ``L = mean((o - Y)^2)`` on
      one-hot ``Y`` (``rate_target``: ``o/T`` instead of ``o``), gradient ``+ weight_decay * w``
      (PyTorch's coupled L2), one optimizer step. BN runs in training mode (batch statistics,
      moving statistics updated) while the weight ``bn_update`` is 1; set it to 0 after the first
      epoch (``tfsnn.training.proxy.FreezeBatchNorm``) to freeze both branches' statistics
      while gamma/beta train on.
    * Metrics: loss, strict (unique max), argmax (first index wins ties) and lenient (ties
      correct) accuracy of the SNN counts; labels are integer class ids.
    """

    def __init__(self, width=128, timesteps=15, threshold=2.0, classes=10,
                 input_shape=(28, 28, 1), weight_decay=1e-6, rate_target=False, **kwargs):
        super().__init__(**kwargs)
        self.width, self.timesteps, self.threshold = int(width), int(timesteps), float(threshold)
        self.classes, self.image_shape = int(classes), tuple(input_shape)
        self.weight_decay, self.rate_target = float(weight_decay), bool(rate_target)
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

    def snn(self, x, bn_training=False):
        """SNN output spike counts ``[B, classes]`` (no gradient)."""
        x = tf.stop_gradient(tf.convert_to_tensor(x))
        th, t = self.threshold, self.timesteps
        b = tf.shape(x)[0]
        i0 = self.bns[0](self.convs[0](x), branch="snn", batch_stats=bn_training)
        s = if_spikes(repeat_in_time(i0, t), th)
        for conv, bn in zip(self.convs[1:], self.bns[1:]):
            frames = tf.reshape(s, tf.concat([[b * t], tf.shape(s)[2:]], 0))
            z = conv(frames)
            z = tf.reshape(z, tf.concat([[b, t], tf.shape(z)[1:]], 0))
            s = if_spikes(bn(z, branch="snn", batch_stats=bn_training, time_axis=True), th)
            frames = tf.nn.max_pool2d(
                tf.reshape(s, tf.concat([[b * t], tf.shape(s)[2:]], 0)), 2, 2, "VALID")
            s = tf.reshape(frames, tf.concat([[b, t], tf.shape(frames)[1:]], 0))
        s = tf.reshape(s, [b, t, -1])
        for fc in self.fcs:
            s = if_spikes(fc(s), th)
        return tf.stop_gradient(tf.reduce_sum(s, axis=1))

    def call(self, x, training=False):
        if not training:
            return self.snn(x, False)
        flag = self.bn_training()
        c = self.snn(x, flag)
        a = self.ann(x, flag)
        return a + tf.stop_gradient(c - a)

    def proxy_loss(self, y, o):
        """``mean((o - one_hot(y))^2)`` over B*classes (``o/T`` with ``rate_target``)."""
        o = o / self.timesteps if self.rate_target else o
        y1 = tf.one_hot(tf.cast(tf.reshape(y, [-1]), tf.int32), self.classes, dtype=o.dtype)
        return tf.reduce_mean(tf.square(o - y1))

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
                "name": self.name}


def proxy_fashion_mnist(width=128, timesteps=15, threshold=2.0, **kwargs):
    """The Fashion-MNIST proxy network (width 128: 19,599,744 shared parameters)."""
    return ProxyNet(width=width, timesteps=timesteps, threshold=threshold, classes=10,
                    input_shape=(28, 28, 1), **kwargs)

