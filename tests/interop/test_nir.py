"""NIR export / import (``tfsnn.interop.nir``): tfsnn -> NIR -> snnTorch, snnTorch -> NIR ->
tfsnn and tfsnn -> NIR file -> tfsnn give identical spike trains on Poisson-encoded real MNIST;
what NIR cannot express is refused with a clear error (needs ``pip install -e .[nir]``; the
snnTorch tests also ``.[interop]``)."""
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfsnn.layers import encoders
from tfsnn.layers.neurons import current, lif
from tfsnn.layers.readouts import SumReadout
from tfsnn.layers.sequence import TimeFolded

nir = pytest.importorskip("nir", reason="NIR tests need the nir package (pip install -e .[nir])")
tn = pytest.importorskip("tfsnn.interop.nir")

T, N_IMAGES = 12, 6
SNNTORCH_DT = 1e-4  # the time step snnTorch's NIR importer and exporter assume


def _mnist_spikes(mnist_test_split, n=N_IMAGES, steps=T, frame=(28, 28, 1)):
    """Poisson spikes ``[n, steps, 28, 28, 1]`` (float32 0/1) of the first n real test images."""
    x, _ = mnist_test_split
    img = tf.constant(x[:n].astype("float32") / 255.0)
    return encoders.poisson_encode(img, steps, seed=(3, 7)).numpy().reshape(n, steps, *frame)


def _dyadic(layer, rng, scale, step=1 / 32):
    """Overwrite the layer's weights by multiples of ``step`` (exact sums in float32 whatever
    the accumulation order, so the spike comparison is bit-exact across frameworks)."""
    for w in layer.weights:
        w.assign(np.round(rng.normal(0, scale, w.shape) / step) * step)


def _spike_layers(model):
    return [l for l in model.layers if isinstance(l, (lif.LIF, current.CuBaLIF))]


def _run_with_spikes(model, x, names=None):
    """All neuron layers' spikes and the model output, as numpy."""
    layers = _spike_layers(model) if names is None else [model.get_layer(n) for n in names]
    probe = keras.Model(model.inputs, [l.output for l in layers] + [model.output])
    return [o.numpy() for o in probe(tf.constant(x))]


# ----------------------------------------------------------------------- small tfsnn SNN

def _tfsnn_net(rng):
    """conv5 (valid, bias) -> LIF -> pool -> conv3 (same) -> LIF -> pool -> flatten ->
    dense -> CuBaLIF -> dense (bias) -> LIF -> SumReadout; dyadic weights and decays."""
    x = inp = keras.Input((None, 28, 28, 1))
    c1 = keras.layers.Conv2D(8, 5, use_bias=True, name="c1_inner")
    x = TimeFolded(c1, name="c1")(x)
    x = lif.LIF(1.0, leak=0.75, reset="zero", name="n1")(x)
    x = TimeFolded(keras.layers.AveragePooling2D(2, name="p1_inner"), name="p1")(x)
    c2 = keras.layers.Conv2D(12, 3, padding="same", use_bias=False, name="c2_inner")
    x = TimeFolded(c2, name="c2")(x)
    x = lif.LIF(0.5, leak=0.875, reset="zero", name="n2")(x)
    x = TimeFolded(keras.layers.AveragePooling2D(2, name="p2_inner"), name="p2")(x)
    x = TimeFolded(keras.layers.Flatten(name="f_inner"), name="f")(x)
    d1 = keras.layers.Dense(40, use_bias=False, name="d1")
    x = current.CuBaLIF(1.0, leak=0.75, current_decay=0.5, reset="zero", name="n3")(d1(x))
    d2 = keras.layers.Dense(10, use_bias=True, name="d2")
    x = lif.LIF(1.0, leak=0.5, reset="zero", name="n4")(d2(x))
    out = SumReadout(name="readout")(x)
    model = keras.Model(inp, out)
    _dyadic(c1, rng, 0.35)
    _dyadic(c2, rng, 0.3)
    _dyadic(d1, rng, 0.12)
    _dyadic(d2, rng, 0.3)
    return model


def _check_active(spikes, names):
    for s, n in zip(spikes, names):  # every layer must fire, but not saturate
        assert 0.005 < s.mean() < 0.6, (n, s.mean())


def test_tfsnn_nir_file_tfsnn_identical(mnist_test_split, tmp_path):
    """tfsnn -> NIR HDF5 file -> tfsnn: every layer's spikes and the readout bit-identical,
    with and without the tfsnn metadata (then from the NIR equations alone)."""
    model = _tfsnn_net(np.random.default_rng(0))
    x = _mnist_spikes(mnist_test_split)
    ref = _run_with_spikes(model, x)
    names = [l.name for l in _spike_layers(model)]
    _check_active(ref[:-1], names)
    path = tmp_path / "net.nir"
    graph = tn.save_nir(model, path)
    kinds = {k: type(v).__name__ for k, v in graph.nodes.items()}
    assert kinds == {"input": "Input", "c1": "Conv2d", "n1": "LIF", "p1": "AvgPool2d",
                     "c2": "Conv2d", "n2": "LIF", "p2": "AvgPool2d", "f": "Flatten",
                     "d1": "Linear", "n3": "CubaLIF", "d2": "Affine", "n4": "LIF",
                     "readout": "I", "output": "Output"}
    assert tuple(graph.nodes["c2"].padding) == (1, 1)
    back = tn.from_nir(path)
    got = _run_with_spikes(back, x, names)
    for a, b in zip(ref, got):
        np.testing.assert_array_equal(a, b)
    # Without metadata: generic LIF / CuBaLIF / SumReadout from the NIR parameters alone.
    for node in graph.nodes.values():
        node.metadata = {}
    plain = tn.from_nir(graph, dt=1.0)
    assert type(plain.get_layer("n3")) is current.CuBaLIF
    for a, b in zip(ref, _run_with_spikes(plain, x, names)):
        np.testing.assert_array_equal(a, b)


def test_lee_lenet_round_trip_and_keras_file(mnist_test_split, tmp_path):
    """The Lee et al. spike-BP LeNet (LeeNeuron, spiking IF pool, LeakyMeanReadout) exports
    exactly; the re-imported model (saved as .keras too) gives identical spikes and logits."""
    from tfsnn.models import spiking
    model = spiking.snn("spike_bp_lenet", timesteps=T, encoder="poisson_half",
                        fc_widths=(64,))
    for w in model.weights:
        if w.path.endswith("kernel"):
            w.assign(w.numpy() * 3.0)  # livelier than the init for a short run
    graph = tn.to_nir(model)
    assert isinstance(graph.nodes["spike1"], nir.LIF)
    assert isinstance(graph.nodes["pool1_spike"], nir.IF)
    assert isinstance(graph.nodes["readout"], nir.LI)
    x, _ = mnist_test_split
    spikes = model.get_layer("encoder")(tf.constant(x[:N_IMAGES].astype("float32") / 255.0))
    names = [l.name for l in _spike_layers(model)]
    ref_model = keras.Model(model.get_layer("encoder").output,
                            [model.get_layer(n).output for n in names] + [model.output])
    ref = [o.numpy() for o in ref_model(spikes)]
    _check_active(ref[:-1], names)
    back = tn.from_nir(graph)
    path = tmp_path / "lee.keras"
    back.save(path)
    back = keras.models.load_model(path)
    assert type(back.get_layer("spike1")).__name__ == "LeeNeuron"
    for a, b in zip(ref, _run_with_spikes(back, spikes.numpy(), names)):
        np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------------- snnTorch


@pytest.mark.interop
def test_tfsnn_to_snntorch_identical_spike_trains(mnist_test_split):
    """tfsnn -> NIR (dt = 1e-4) -> snnTorch's importer: identical spike trains in every layer
    on Poisson-encoded MNIST (the readout is left out: snnTorch has no NIR ``I``)."""
    torch = pytest.importorskip("torch", reason="needs torch (pip install -e .[interop])")
    pytest.importorskip("snntorch", reason="needs snntorch (pip install -e .[interop])")
    pytest.importorskip("nirtorch", reason="snnTorch's NIR importer needs nirtorch")
    import snntorch.utils
    from snntorch.import_nir import import_from_nir

    model = _tfsnn_net(np.random.default_rng(0))
    x = _mnist_spikes(mnist_test_split)
    names = [l.name for l in _spike_layers(model)]
    ref = _run_with_spikes(model, x)[:-1]
    _check_active(ref, names)
    graph = tn.to_nir(model, dt=SNNTORCH_DT, readout=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = import_from_nir(graph)
    modules = dict(net.named_modules())
    assert type(modules["n3"]).__name__ == "Synaptic"
    rec = {}
    for n in names:
        modules[n].register_forward_hook(
            lambda m, i, o, n=n: rec.setdefault(n, []).append(
                (o[0] if isinstance(o, tuple) else o).detach().numpy().copy()))
    with torch.no_grad():
        for b in range(x.shape[0]):  # NIR shapes have no batch axis: one image at a time
            snntorch.utils.reset(net)
            for t in range(x.shape[1]):
                net(torch.tensor(np.transpose(x[b, t], (2, 0, 1))))
    compared = 0
    for n, r in zip(names, ref):
        got = np.stack(rec[n]).reshape(x.shape[0], x.shape[1], *rec[n][0].shape)
        if got.ndim == 5:
            got = np.transpose(got, (0, 1, 3, 4, 2))  # NCHW -> NHWC
        np.testing.assert_array_equal(got, r, err_msg=n)
        compared += r.size
    assert compared == sum(r.size for r in ref)


@pytest.mark.interop
def test_snntorch_to_tfsnn_identical_spike_trains(mnist_test_split):
    """A small snnTorch net (Conv2d, Leaky, AvgPool2d, Flatten, Linear, Synaptic; reset to
    zero right after the spike) -> snnTorch's NIR export -> from_nir: identical spikes."""
    torch = pytest.importorskip("torch", reason="needs torch (pip install -e .[interop])")
    snn = pytest.importorskip("snntorch", reason="needs snntorch (pip install -e .[interop])")
    from snntorch.utils import reset as reset_hidden
    pytest.importorskip("nirtorch", reason="snnTorch's NIR exporter needs nirtorch")
    from snntorch.export_nir import export_to_nir

    torch.manual_seed(0)
    kw = dict(reset_mechanism="zero", reset_delay=False, init_hidden=True)
    full = lambda shape, v: torch.full(shape, v)  # noqa: E731
    # Per-neuron parameter tensors: snnTorch's exporter writes scalar beta / threshold as 0-d
    # NIR arrays, which nir's type inference rejects.
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 6, 5),
        snn.Leaky(beta=full((6, 24, 24), 0.75), threshold=full((6, 24, 24), 1.0), **kw),
        torch.nn.AvgPool2d(2), torch.nn.Flatten(-3), torch.nn.Linear(6 * 12 * 12, 32),
        snn.Synaptic(alpha=full((32,), 0.5), beta=full((32,), 0.875),
                     threshold=full((32,), 1.0), **kw),
        torch.nn.Linear(32, 10), snn.Leaky(beta=full((10,), 0.5), threshold=full((10,), 0.5),
                                           **kw))
    rng = np.random.default_rng(2)
    with torch.no_grad():
        for p, s in zip(net.parameters(), (0.35, 0.1, 0.08, 0.1, 0.3, 0.1)):
            p.copy_(torch.tensor(np.round(rng.normal(0, s, p.shape) * 32) / 32))
    x = _mnist_spikes(mnist_test_split)
    xt = torch.tensor(np.transpose(x, (0, 1, 4, 2, 3)))  # [B, T, C, H, W]
    spk_layers = {"1": net[1], "5": net[5], "7": net[7]}
    rec = {}
    for n, m in spk_layers.items():
        m.register_forward_hook(lambda m, i, o, n=n: rec.setdefault(n, []).append(
            (o[0] if isinstance(o, tuple) else o).detach().numpy().copy()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = export_to_nir(net, xt[0, 0])  # one unbatched frame: NIR shapes have no batch
    reset_hidden(net)
    rec.clear()
    for t in range(T):
        net(xt[:, t])
    model = tn.from_nir(graph, dt=SNNTORCH_DT)
    kinds = [type(l).__name__ for l in model.layers]
    assert kinds.count("LIF") == 2 and kinds.count("CuBaLIF") == 1, kinds
    names = [l.name for l in _spike_layers(model)]
    ours = _run_with_spikes(model, x, names)[:-1]
    for n, r in zip(spk_layers, ours):
        got = np.stack(rec[n], axis=1)
        if got.ndim == 5:
            got = np.transpose(got, (0, 1, 3, 4, 2))
        assert 0.005 < got.mean() < 0.6, (n, got.mean())
        np.testing.assert_array_equal(r, got, err_msg=n)


# ----------------------------------------------------------------------- refusals


def test_subtractive_reset_refused_unless_inexact(mnist_test_split):
    """Rathi's neuron (subtractive reset, fire before integrate) has no NIR primitive: refused
    by default; exact=False exports LIF/IF with a warning, and tfsnn re-imports the Rathi
    neuron exactly from the node metadata."""
    from tfsnn.models import spiking
    model = spiking.snn("vgg5", timesteps=10, input_shape=(12, 12, 1), fc_widths=(16,))
    for w in model.weights:
        if w.path.endswith("kernel"):
            w.assign(w.numpy() * 6.0)  # livelier than the init for a short run
    with pytest.raises(tn.NIRExportError, match=r"spike1.*reset='subtract'.*fire_before"):
        tn.to_nir(model)
    with pytest.warns(UserWarning, match=r"'spike1' \(RathiNeuron\).*'spike4'"):
        graph = tn.to_nir(model, exact=False)
    assert isinstance(graph.nodes["spike1"], nir.IF)
    back = tn.from_nir(graph)
    assert type(back.get_layer("spike1")).__name__ == "RathiNeuron"
    x, _ = mnist_test_split
    spikes = model.get_layer("encoder")(
        tf.image.resize(tf.constant(x[:2].astype("float32") / 255.0), (12, 12)))
    names = [l.name for l in _spike_layers(model)]
    probe = keras.Model(model.get_layer("encoder").output,
                        [model.get_layer(n).output for n in names] + [model.output])
    ref = [o.numpy() for o in probe(spikes)]
    _check_active(ref[:-1], names)
    for a, b in zip(ref, _run_with_spikes(back, spikes.numpy(), names)):
        np.testing.assert_array_equal(a, b)


def test_integer_all_int_snn_refused():
    """The integer ALL_INT SNN's signed dynamic-threshold neuron cannot be NIR: clear refusal."""
    import tfsnn
    inp = keras.Input((12, 12, 1))
    h = keras.layers.Conv2D(4, 3, use_bias=False)(inp)
    h = keras.layers.BatchNormalization()(h)
    h = keras.layers.ReLU()(h)
    h = keras.layers.Conv2D(4, 3, use_bias=False)(h)
    h = keras.layers.BatchNormalization()(h)
    h = keras.layers.ReLU()(h)
    out = keras.layers.Dense(3)(keras.layers.Flatten()(h))
    snn = tfsnn.convert(tfsnn.quantize_model(keras.Model(inp, out), k=0), use_int=True)
    with pytest.raises(tn.NIRExportError, match=r"-1.*threshold changes with time"):
        tn.to_nir(snn)


def test_unsupported_nodes_and_layers_named():
    graph = nir.NIRGraph(
        nodes={"input": nir.Input(np.array([4])),
               "thr": nir.Threshold(threshold=np.ones(4)),
               "output": nir.Output(np.array([4]))},
        edges=[("input", "thr"), ("thr", "output")])
    with pytest.raises(tn.NIRImportError, match=r"'thr' is a nir.Threshold.*supported node "
                                                r"kinds: Input, Output, Conv2d"):
        tn.from_nir(graph)
    partial = nir.NIRGraph(
        nodes={"input": nir.Input(np.array([2, 3, 3])),
               "flat": nir.Flatten(input_type={"input": np.array([2, 3, 3])}, start_dim=1),
               "output": nir.Output(np.array([2, 9]))},
        edges=[("input", "flat"), ("flat", "output")])
    with pytest.raises(tn.NIRImportError, match=r"'flat'.*whole frame.*start_dim=1"):
        tn.from_nir(partial)
    inp = keras.Input((None, 4))
    model = keras.Model(inp, keras.layers.Activation("relu", name="act")(inp))
    with pytest.raises(tn.NIRExportError, match=r"'act' \(Activation\) has no NIR export"):
        tn.to_nir(model)
    a = keras.Input((None, 4))
    h = lif.LIF(1.0, leak=0.5, reset="zero", name="n")(a)
    res = keras.Model(a, keras.layers.Add(name="add")([h, a]))
    with pytest.raises(tn.NIRExportError, match="add"):
        tn.to_nir(res)


def test_bad_dt_gain_and_padding_errors():
    """A graph read with the wrong dt (input gain != 1) and Keras' asymmetric 'same' padding."""
    a = keras.Input((None, 5))
    model = keras.Model(a, lif.LIF(1.0, leak=0.5, reset="zero", name="n")(a))
    graph = tn.to_nir(model, dt=SNNTORCH_DT)
    with pytest.raises(tn.NIRImportError, match=r"'n'.*r\*dt/tau must be 1"):
        tn.from_nir(graph, dt=1.0)
    assert tn.from_nir(graph).get_layer("n").leak == pytest.approx(0.5, abs=1e-12)
    with pytest.raises(ValueError, match="dt must be > 0"):
        tn.to_nir(model, dt=0)
    b = keras.Input((None, 8, 8, 1))
    conv = TimeFolded(keras.layers.Conv2D(2, 2, padding="same"), name="even")(b)
    with pytest.raises(tn.NIRExportError, match=r"'even'.*symmetric padding"):
        tn.to_nir(keras.Model(b, conv))


def _numpy_nir_reference(x, w, b, th1, wd, bd, th2, leak2):
    """NIR's equations, Euler with dt = 1, in numpy float64 (independent of tfsnn): Conv2d
    (pad 1, stride 2) -> IF (per-channel thresholds, reset to 0) -> SumPool2d 2x2 -> Flatten
    (C, H, W) -> Affine -> LIF (per-neuron thresholds). ``x``: [B, T, C, H, W]."""
    bsz, steps, _, hh, ww = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (0, 0), (1, 1), (1, 1)))
    ho, wo = (hh - 1) // 2 + 1, (ww - 1) // 2 + 1
    cur = np.zeros((bsz, steps, w.shape[0], ho, wo))
    for i in range(ho):
        for j in range(wo):
            patch = xp[:, :, :, 2 * i:2 * i + 3, 2 * j:2 * j + 3]
            cur[..., i, j] = np.einsum("btchw,ochw->bto", patch, w) + b
    v1 = np.zeros(cur.shape[:1] + cur.shape[2:])
    v2 = np.zeros((bsz, wd.shape[0]))
    s1, s2 = np.zeros_like(cur), np.zeros((bsz, steps, wd.shape[0]))
    for t in range(steps):
        v1 = v1 + cur[:, t]
        z1 = v1 > th1[None, :, None, None]
        v1[z1] = 0.0
        s1[:, t] = z1
        pooled = z1.reshape(bsz, z1.shape[1], ho // 2, 2, wo // 2, 2).sum(axis=(3, 5))
        v2 = leak2 * v2 + pooled.reshape(bsz, -1) @ wd.T + bd
        z2 = v2 > th2
        v2[z2] = 0.0
        s2[:, t] = z2
    return s1, s2


def test_from_nir_matches_numpy_nir_equations(mnist_test_split):
    """A hand-written NIR graph (padded stride-2 Conv2d, per-channel IF thresholds, SumPool2d,
    Affine, per-neuron LIF thresholds) imported by from_nir = NIR's equations in numpy."""
    rng = np.random.default_rng(5)
    q = lambda a: np.round(a * 32) / 32  # noqa: E731  (dyadic: exact in float32)
    w, b = q(rng.normal(0, 0.4, (4, 1, 3, 3))), q(rng.normal(0, 0.1, 4))
    th1 = np.array([0.5, 1.0, 0.75, 1.25])
    wd, bd = q(rng.normal(0, 0.15, (6, 4 * 7 * 7))), q(rng.normal(0, 0.1, 6))
    th2, leak2 = np.array([0.5, 0.75, 1.0, 0.5, 0.25, 1.0]), 0.5
    tau2 = np.full(6, 1.0 / (1.0 - leak2))
    graph = nir.NIRGraph(
        nodes={"input": nir.Input(np.array([1, 28, 28])),
               "conv": nir.Conv2d(input_shape=(28, 28), weight=w, stride=2, padding=1,
                                  dilation=1, groups=1, bias=b),
               "if": nir.IF(r=np.ones((4, 14, 14)),
                            v_threshold=np.broadcast_to(th1[:, None, None], (4, 14, 14)).copy()),
               "pool": nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]),
                                     padding=np.array([0, 0])),
               "flat": nir.Flatten(input_type={"input": np.array([4, 7, 7])}, start_dim=0),
               "fc": nir.Affine(weight=wd, bias=bd),
               "lif": nir.LIF(tau=tau2, r=tau2, v_leak=np.zeros(6), v_threshold=th2),
               "output": nir.Output(np.array([6]))},
        edges=[("input", "conv"), ("conv", "if"), ("if", "pool"), ("pool", "flat"),
               ("flat", "fc"), ("fc", "lif"), ("lif", "output")])
    model = tn.from_nir(graph)
    assert model.get_layer("if").per_channel and model.get_layer("lif").per_channel
    x = _mnist_spikes(mnist_test_split, n=4, steps=8)
    s1, s2 = _run_with_spikes(model, x, ["if", "lif"])[:2]
    r1, r2 = _numpy_nir_reference(np.transpose(x, (0, 1, 4, 2, 3)).astype(np.float64),
                                  w, b, th1, wd, bd, th2, leak2)
    assert r1.sum() > 100 and 20 < r2.sum() < 0.6 * r2.size, (r1.sum(), r2.sum())
    np.testing.assert_array_equal(s1, np.transpose(r1, (0, 1, 3, 4, 2)))
    np.testing.assert_array_equal(s2, r2)
