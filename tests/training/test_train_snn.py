"""train_snn runs (spike_bp, hybrid) on tiny synthetic data: run dir, resume, flag errors."""
import json
import subprocess
import sys

import keras
import numpy as np
import pytest

from tfsnn import runs
from tfsnn.layers.neurons.base import NeuronLayer
from tfsnn.training import snn

from conftest import REPO


def arrays(n=48, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n).astype(np.int64)
    x = np.zeros((n, 28, 28, 1), np.uint8)
    x[y == 0, :14] = 200  # class 0: bright top half, class 1: bright bottom half
    x[y == 1, 14:] = 200
    x = np.clip(x + rng.integers(0, 40, x.shape), 0, 255).astype(np.uint8)
    return (x[:32], y[:32]), None, (x[32:], y[32:])


def test_spike_bp_run_and_exact_resume(tmp_path, monkeypatch):
    cfg = dict(method="spike_bp", timesteps=6, epochs=1, batch_size=16, fc_widths=[32],
               run_dir=str(tmp_path / "run"), verbose=0, tensorboard=False)
    r1 = snn.train(cfg, arrays())
    run = runs.RunDir(tmp_path / "run")
    assert run.epochs_done() == 1 and run.model.is_file()
    assert json.loads(run.results.read_text())["model"] == "spike_bp_lenet"
    # --jit_compile (a performance switch) may change on resume: epoch 2 runs whole-step XLA
    fit, modes = keras.Model.fit, []
    monkeypatch.setattr(keras.Model, "fit",
                        lambda self, *a, **k: modes.append(self.jit_compile) or fit(self, *a, **k))
    r2 = snn.train({**cfg, "epochs": 2, "resume": True, "jit_compile": True}, arrays())
    assert run.epochs_done() == 2 and r2["epochs"] == 2 and modes == [True]
    monkeypatch.undo()
    assert len(run.history.read_text().strip().splitlines()) == 3  # header + 2 epochs
    m = keras.models.load_model(run.model)
    assert m.get_layer("spike1").ng_correction and np.isfinite(r1["test_loss"])
    rep = json.loads((run.path / "report.json").read_text())  # counted on the test split
    assert rep["meta"]["n_images"] == len(arrays()[2][0]) and rep["meta"]["timesteps"] == 6
    assert r2["spikes_per_image"] == pytest.approx(rep["totals"]["spikes_per_image"])
    assert r2["energy_J_per_image"]["loihi"] > 0 and (run.path / "report.md").is_file()
    with pytest.raises(runs.ConfigError, match="--timesteps"):
        snn.train({**cfg, "timesteps": 8, "epochs": 3, "resume": True}, arrays())


@pytest.mark.slow  # ~40 s on 2 busy cores (ANN fit, balancing, fine-tuning traces)
def test_hybrid_run_writes_conversion(tmp_path):
    cfg = dict(method="hybrid", model="vgg5", timesteps=8, epochs=1, batch_size=16,
               fc_widths=[16, 16], ann_epochs=1, balance_examples=4, balance_timesteps=30,
               run_dir=str(tmp_path), fine_tune_examples=16,
               verbose=0, tensorboard=False)
    res = snn.train(cfg, arrays())
    assert res["train_examples"] == 16  # STDB on the first 16 of the 32 training images
    conv = json.loads((tmp_path / "conversion.json").read_text())
    assert len(conv["thresholds_unscaled"]) == 5 and conv["scaling_factor"] == 0.7
    assert (tmp_path / "ann.keras").is_file() and 0 <= res["test_accuracy"] <= 1
    assert res["converted_test_accuracy"] == conv["converted_test_accuracy"]
    assert "converted before fine-tuning" in snn.summary_line(snn.resolve(cfg), res)


def test_flag_errors_name_the_flag(tmp_path):
    for bad, flag in [(dict(method="stdp"), "--method"), (dict(model="vgg8"), "--model"),
                      (dict(timesteps=0), "--timesteps"), (dict(leak=1.5), "--leak"),
                      (dict(surrogate="relu"), "--surrogate"), (dict(dataset="svhn"), "--dataset"),
                      (dict(method="hybrid", model="resnet11"), "--model"),
                      (dict(optimizer="rmsprop"), "--optimizer"),
                      (dict(method="hybrid", optimizer="adamw"), "--optimizer"),
                      (dict(fine_tune_examples=8), "--fine_tune_examples"),
                      (dict(method="hybrid", fine_tune_examples=-1), "--fine_tune_examples"),
                      (dict(divide_by_time=True), "--divide_by_time"),
                      (dict(jit_compile=True, strategy="mirrored"), "--jit_compile"),
                      (dict(method="hybrid", dropout=1.0), "--dropout")]:
        with pytest.raises(runs.ConfigError, match=flag):
            snn.resolve(bad)
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "train_snn.py"),
                          "--timesteps=0", f"--run_dir={tmp_path}"], capture_output=True,
                         text=True, cwd=REPO)
    assert out.returncode != 0 and "--timesteps=0" in out.stderr
    assert not (tmp_path / "checkpoint").exists()


def test_dropout_flag_sets_the_snn_dropout_rates():
    """``--dropout`` replaces the architecture's conv / FC rates of the SNN (VGG5: 0.3 / 0.5)."""
    def rates(**kw):
        c = snn.resolve(dict(method="hybrid", model="vgg5", timesteps=2, **kw))
        m = snn.make_snn(c, 10, (28, 28, 1))
        return sorted({layer.rate for layer in m.layers if hasattr(layer, "rate")})
    assert rates() == [0.3, 0.5]
    assert rates(dropout=0.0) in ([], [0.0])
    assert rates(dropout=0.2) == [0.2]


def test_fine_tune_split_takes_the_first_images_and_refuses_too_many():
    train = (np.arange(10)[:, None], np.arange(10) % 2)
    c = snn.resolve(dict(method="hybrid", fine_tune_examples=4))
    x, y = snn.fine_tune_split(c, train)
    np.testing.assert_array_equal(x[:, 0], [0, 1, 2, 3])
    np.testing.assert_array_equal(y, [0, 1, 0, 1])
    assert snn.fine_tune_split(snn.resolve(dict(method="hybrid")), train) is train
    with pytest.raises(runs.ConfigError, match="--fine_tune_examples=11: .* only 10"):
        snn.fine_tune_split(snn.resolve(dict(method="hybrid", fine_tune_examples=11)), train)


def test_too_many_fine_tune_examples_refused_before_the_run_dir_is_written(tmp_path):
    cfg = dict(method="hybrid", model="vgg5", timesteps=4, epochs=1, fine_tune_examples=40,
               run_dir=str(tmp_path / "run"), verbose=0, tensorboard=False)
    with pytest.raises(runs.ConfigError, match="--fine_tune_examples=40: .* only 32"):
        snn.train(cfg, arrays())
    assert not (tmp_path / "run" / "flags.json").exists()


def test_spike_bp_optimizer_choice():
    from tfsnn.models import spiking
    from tfsnn.training import spike_bp
    c = snn.resolve(dict(optimizer="adam"))
    assert c["learning_rate"] == snn.ADAM_LR and c["optimizer"] == "adam"
    c = snn.resolve({})
    assert c["optimizer"] == "sgd" and c["learning_rate"] == 0.0085  # the original's
    assert snn.resolve(dict(method="hybrid"))["optimizer"] is None
    from tfsnn.training import hybrid
    vgg = spiking.snn("vgg5", 2, 10, (28, 28, 1), fc_widths=[8, 8])
    for name in (None, "adam", "sgd"):  # hybrid: lr 1e-4 with either optimizer
        c = snn.resolve(dict(method="hybrid", optimizer=name))
        assert c["learning_rate"] == 1e-4
        opt = hybrid.compile_for_fine_tuning(vgg, c["learning_rate"],
                                             optimizer=c["optimizer"]).optimizer
        if name == "sgd":
            assert isinstance(opt, keras.optimizers.SGD) and opt.momentum == 0.95
        else:
            assert isinstance(opt, keras.optimizers.Adam) and opt.amsgrad
    with pytest.raises(ValueError, match="optimizer"):
        hybrid.compile_for_fine_tuning(vgg, optimizer="rmsprop")
    net = spiking.snn("spike_bp_lenet", 2, 10, (28, 28, 1), fc_widths=[8])
    opt = spike_bp.compile_spike_bp(net, 1e-3, 5e-4, optimizer="adam").optimizer
    assert isinstance(opt, keras.optimizers.Adam) and opt.weight_decay == pytest.approx(5e-4)
    opt = spike_bp.compile_spike_bp(net, 1e-3, 5e-4).optimizer
    assert isinstance(opt, keras.optimizers.SGD) and opt.momentum == 0.0
    with pytest.raises(ValueError, match="optimizer"):
        spike_bp.compile_spike_bp(net, optimizer="adamw")


def _script_module(monkeypatch):
    import importlib.util
    monkeypatch.syspath_prepend(str(REPO / "scripts"))  # for scripts/run_flags.py
    spec = importlib.util.spec_from_file_location("train_snn_script", REPO / "scripts" / "train_snn.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_script_has_a_flag_for_every_option_of_every_method(monkeypatch):
    script = _script_module(monkeypatch)
    for method in script.METHODS:
        module = script.method_module(method)
        missing = set(module.DEFAULTS) - set(script.SCRIPT_FLAGS) - {"verbose"}
        assert not missing, (method, missing)
    from tfsnn import runs
    assert tuple(script.run_flags.STRATEGIES) == tuple(runs.STRATEGIES)


@pytest.mark.parametrize("args,needle", [
    (["--method", "iir", "--ann_epochs", "3"], "--ann_epochs does not apply to --method iir"),
    (["--method", "proxy", "--epochs", "0"], "--epochs=0: must be an integer >= 1"),
    (["--method", "associative_memory", "--noise_p", "2"], "--noise_p=2.0: must be a probability"),
])
def test_cli_rejects_bad_flags(tmp_path, args, needle):
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "train_snn.py"), *args,
                          "--run_dir", str(tmp_path / "r")], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode != 0 and needle in out.stderr, out.stderr[-2000:]
    assert not (tmp_path / "r" / "checkpoint").exists()


def test_jit_compile_flag_reaches_the_compiled_model():
    """``--jit_compile``: XLA for the whole train step; off by default (graph-mode step, the
    neurons' time loops XLA-compiled)."""
    for flag, whole in ((None, False), (True, True)):
        cfg = dict(timesteps=2) if flag is None else dict(timesteps=2, jit_compile=flag)
        model = snn.build(snn.resolve(cfg), None, None, None, steps=10)
        assert model.jit_compile is whole
        neurons = [layer for layer in model.layers if isinstance(layer, NeuronLayer)]
        assert neurons and all(layer.jit_compile for layer in neurons)
