#!/usr/bin/env python
"""Deployment formats side by side: file size, per-image latency and equivalence on the whole
Fashion-MNIST test set, for the ANN and its integer SNN of a training run.

  python bench/export_formats.py --run_dir logs/quant_fashion_mnist_k0_ternary

Rows: TF (the Keras ANN / ``tfsnn.simulate`` in TensorFlow, the references), TF SavedModel
(``tfsnn.export.export_ann`` / ``export_snn``), TF unrolled (``tfsnn.export.UnrolledSnn``, what
the portable files are converted from), LiteRT (``to_tflite``, ``ai_edge_litert`` interpreter)
and ONNX (``to_onnx``, onnxruntime), each for the ANN and the SNN. Latency: per image, at batch 1
and batch 100, medians of ``--repeats`` interleaved repeats (every row timed in turn within each
repeat, after a warm-up call). Equivalence on ``--max_images`` test images (default all):
``classes==TF`` counts images whose class equals TF's (Keras ANN argmax / ``simulate`` at the last
step); ``spikes==`` counts the batches of 100 whose per-layer spike (and SOP) sums equal
``simulate``'s (per-image counts of LiteRT and ONNX are also compared with each other). Formats
whose package is missing are reported as such. Timings are shared-machine wall clock.
"""
import argparse
import importlib.util
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def dir_size(p):
    p = Path(p)
    return p.stat().st_size if p.is_file() else sum(f.stat().st_size for f in p.rglob("*")
                                                    if f.is_file())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run_dir", default="logs/quant_fashion_mnist_k0_ternary",
                    help="run dir with model.keras (falls back to logs/energy_k0 if absent)")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--max_images", type=int, default=None)
    ap.add_argument("--timesteps", type=int, default=None)
    ap.add_argument("--out_dir", default=None, help="where the files go (default a temp dir)")
    ap.add_argument("--json", default=None, help="also write the rows as JSON here")
    a = ap.parse_args()
    if a.repeats < 1:
        ap.error("--repeats must be >= 1")
    run_dir = Path(a.run_dir)
    if not (run_dir / "model.keras").is_file():
        print(f"{run_dir}/model.keras not found; using logs/energy_k0")
        run_dir = Path("logs/energy_k0")
    if not (run_dir / "model.keras").is_file():
        sys.exit(f"--run_dir: no model.keras in {a.run_dir} nor in logs/energy_k0")

    import tensorflow as tf
    import tfsnn
    from tfsnn import export, runs, simulation
    from tfsnn.data.loaders import load
    from tfsnn.export import onnx as xonnx, tflite as xtfl, unrolled

    ann = runs.load_model(run_dir / "model.keras")
    snn = tfsnn.convert(ann, use_int=True, timesteps=a.timesteps)
    (xs, ys), = load("fashion_mnist", splits=("test",))
    x = xs[:a.max_images].astype(np.float32) / 256.0
    n = len(x)
    out = Path(a.out_dir or tempfile.mkdtemp(prefix="export_formats_"))
    t_snn = simulation.check_timesteps(simulation.SnnGraph.of(snn), a.timesteps)
    print(f"model {run_dir}/model.keras, SNN T={t_snn}, {n} Fashion-MNIST test images, files in "
          f"{out}", flush=True)

    # ---------------------------------------------------------------- references (TF)
    ann_fn = tf.function(lambda b: ann(b, training=False), reduce_retracing=True)
    snn_fn = simulation.make_batch_fn(snn, a.timesteps)
    t0 = time.time()
    ann_ref = np.concatenate([ann_fn(tf.constant(x[i:i + 500])).numpy()
                              for i in range(0, n, 500)]).argmax(-1)
    sim = simulation.simulate(snn, x, batch_size=100, timesteps=a.timesteps, warn=False)
    snn_ref = sim.logits[:, -1].argmax(-1)
    batch_spikes = (sim.pos + sim.neg).sum(2)  # [nb, L]
    batch_sops = sim.sops.sum(2)
    print(f"TF references in {time.time() - t0:.0f}s; ANN accuracy "
          f"{np.mean(ann_ref == ys[:n]):.4f}, SNN accuracy {np.mean(snn_ref == ys[:n]):.4f}",
          flush=True)

    rows = []  # dicts: format, model, size, fn(batch) -> dict, full(x) -> dict

    def add(fmt, model, size, fn, full=None):
        rows.append({"format": fmt, "model": model, "size": size, "fn": fn,
                     "full": full or (lambda xx: _batched(fn, xx))})

    add("TF (Keras / simulate)", "ANN", dir_size(run_dir / "model.keras"),
        lambda b: {"class": ann_fn(tf.constant(b)).numpy().argmax(-1)})
    add("TF (Keras / simulate)", "SNN", dir_size(run_dir / "model.keras"),
        lambda b: {"class": snn_fn(tf.constant(b))["logits"][:, -1].numpy().argmax(-1)})
    try:
        pa = export.export_ann(ann, out / "savedmodel_ann")
        ps = export.export_snn(snn, out / "savedmodel_snn", timesteps=a.timesteps)
        la, ls = tf.saved_model.load(str(pa)), tf.saved_model.load(str(ps))
        sa, ss = la.signatures["serving_default"], ls.signatures["serving_default"]
        add("TF SavedModel", "ANN", dir_size(pa),
            lambda b: {"class": sa(images=tf.constant(b))["class"].numpy()})
        add("TF SavedModel", "SNN", dir_size(ps),
            lambda b: {"class": ss(images=tf.constant(b))["class"].numpy()})
    except Exception as e:  # another deployment path; report and go on
        print(f"TF SavedModel export failed: {type(e).__name__}: {e}")
    u = unrolled.UnrolledSnn(snn, a.timesteps)
    add("TF unrolled (what is converted)", "SNN", None,
        lambda b: {k: v.numpy() for k, v in u(tf.constant(b)).items()})
    try:
        from ai_edge_litert.interpreter import Interpreter
        for kind, model in (("ANN", ann), ("SNN", snn)):
            t0 = time.time()
            p = xtfl.to_tflite(model, out / f"{kind.lower()}.tflite",
                               timesteps=a.timesteps if kind == "SNN" else None)
            print(f"LiteRT {kind}: converted in {time.time() - t0:.0f}s", flush=True)
            runner = Interpreter(model_path=str(p)).get_signature_runner()
            add("LiteRT (TFLite)", kind, dir_size(p),
                (lambda r: lambda b: {k: np.array(v) for k, v in r(images=b).items()})(runner))
    except ImportError as e:
        print(f"LiteRT skipped: {e}")
    try:
        if not (importlib.util.find_spec("onnxruntime") and importlib.util.find_spec("tf2onnx")):
            raise ImportError("ONNX needs tf2onnx and onnxruntime (pip install -e .[onnx])")
        for kind, model in (("ANN", ann), ("SNN", snn)):
            t0 = time.time()
            p = xonnx.to_onnx(model, out / f"{kind.lower()}.onnx",
                              timesteps=a.timesteps if kind == "SNN" else None)
            print(f"ONNX {kind}: converted in {time.time() - t0:.0f}s", flush=True)
            sess = xonnx.session(p)
            names = [o.name for o in sess.get_outputs()]
            add("ONNX (onnxruntime)", kind, dir_size(p),
                (lambda s, nm: lambda b: dict(zip(nm, s.run(nm, {"images": b}))))(sess, names))
    except ImportError as e:
        print(f"ONNX skipped: {e}")

    # ---------------------------------------------------------------- latency
    b1, b100 = x[:1], x[:100]
    for r in rows:
        r["fn"](b1), r["fn"](b100)  # warm-up (tracing, allocation)
        r["t1"], r["t100"] = [], []
    for _ in range(a.repeats):
        for r in rows:
            for key, b in (("t1", b1), ("t100", b100)):
                t0 = time.perf_counter()
                r["fn"](b)
                r[key].append((time.perf_counter() - t0) / len(b))

    # ---------------------------------------------------------------- equivalence
    per_image = {}
    for r in rows:
        if r["format"].startswith("TF ("):
            r["classes"], r["spikes"] = f"{n}/{n} (ref)", "ref"
            continue
        t0 = time.time()
        res = r["full"](x)
        ref = ann_ref if r["model"] == "ANN" else snn_ref
        r["classes"] = f"{int(np.sum(res['class'] == ref))}/{n}"
        if "spikes" in res:
            per_image[r["format"]] = res["spikes"]
            nb = len(batch_spikes)
            sp = np.stack([res["spikes"][i * 100:(i + 1) * 100].sum(0) for i in range(nb)])
            so = np.stack([res["sops"][i * 100:(i + 1) * 100].sum(0) for i in range(nb)])
            ok = np.all(sp == batch_spikes, 1) & np.all(so == batch_sops, 1)
            r["spikes"] = f"{int(ok.sum())}/{nb} batches"
        else:
            r["spikes"] = "-"
        r["eval_s"] = time.time() - t0
        print(f"{r['format']} {r['model']}: evaluated in {r['eval_s']:.0f}s", flush=True)
    fmts = list(per_image)
    for i in range(len(fmts)):
        for j in range(i + 1, len(fmts)):
            eq = np.all(per_image[fmts[i]] == per_image[fmts[j]], axis=1)
            print(f"per-image spike counts, {fmts[i]} == {fmts[j]}: {int(eq.sum())}/{n}")

    # ---------------------------------------------------------------- table
    head = ["format", "model", "size MB", "ms/img b1", "ms/img b100", "classes==TF", "spikes=="]
    table = []
    for r in rows:
        size = "-" if r["size"] is None else f"{r['size'] / 1e6:.2f}"
        table.append([r["format"], r["model"], size,
                      f"{1e3 * statistics.median(r['t1']):.2f}",
                      f"{1e3 * statistics.median(r['t100']):.2f}", r["classes"], r["spikes"]])
    w = [max(len(str(c)) for c in col) for col in zip(head, *table)]
    print()
    for line in [head, ["-" * k for k in w], *table]:
        print("  ".join(str(c).ljust(k) for c, k in zip(line, w)))
    if a.json:
        Path(a.json).write_text(json.dumps([dict(zip(head, t)) for t in table], indent=2))


def _batched(fn, x, batch=100):
    parts = [fn(np.ascontiguousarray(x[i:i + batch])) for i in range(0, len(x), batch)]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


if __name__ == "__main__":
    main()
