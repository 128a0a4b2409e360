#!/usr/bin/env python
"""Draw a run's learning curve: per-epoch train / validation accuracy and loss from
``<run_dir>/history.csv``, with the test accuracies of ``results.json`` as lines.

  python scripts/plot_history.py --run_dir logs/snn_spike_bp_spike_bp_lenet_fashion_mnist_T10
  python scripts/plot_history.py --run_dir D --out docs/learning_curve_spike_bp.png --title "..."

Writes ``--out`` (default ``<run_dir>/learning_curve.png``; also ``.svg`` / ``.pdf`` with
``--formats``). Lines drawn from results.json, where present: ``test_accuracy`` (the tested
model), ``test_strict_accuracy`` (proxy), ``converted_test_accuracy`` (hybrid, before STDB) and
``ann_test_accuracy`` (hybrid's ANN). ``train_snn.py`` draws ``<run_dir>/learning_curve.png``
this way at the end of every run. Works on a run still in progress (no results.json yet).
"""
import json
from pathlib import Path

from absl import app, flags

FLAGS = flags.FLAGS


def define_flags():
    """This script's flags (defined only when it runs: train_snn.py imports this module)."""
    flags.DEFINE_string("run_dir", None, "Run directory holding history.csv.")
    flags.DEFINE_string("out", None, "Figure path (default <run_dir>/learning_curve.png).")
    flags.DEFINE_string("title", None, "Figure title (default: the run directory's name).")
    flags.DEFINE_list("formats", ["png"], "Figure formats: png, svg, pdf.")
    flags.mark_flag_as_required("run_dir")


LINES = {"test_accuracy": "test", "test_strict_accuracy": "test (strict)",
         "converted_test_accuracy": "converted SNN before STDB, test",
         "ann_test_accuracy": "ANN, test"}


def write_learning_curve(run_dir, out=None, title=None, formats=("png",)):
    """Draw ``run_dir``'s history.csv (and results.json lines) to ``out``; returns the paths."""
    from tfsnn import runs
    from tfsnn.viz import plots
    run_dir = Path(run_dir)
    history = runs.read_history(run_dir / "history.csv")
    if not history:
        raise FileNotFoundError(f"{run_dir / 'history.csv'}: no history (has an epoch finished?)")
    results_path = run_dir / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    lines = {label: float(results[k]) for k, label in LINES.items()
             if isinstance(results.get(k), (int, float))}
    n = len(next(iter(history.values())))
    fig = plots.learning_curve(history, title or run_dir.name, lines=lines,
                               caption=f"{n} epochs; history.csv of {run_dir}")
    out = Path(out) if out else run_dir / "learning_curve.png"
    return plots.save_figure(fig, out.with_suffix(""), formats=tuple(formats))


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    try:
        paths = write_learning_curve(FLAGS.run_dir, FLAGS.out, FLAGS.title, FLAGS.formats)
    except (FileNotFoundError, ValueError) as e:
        raise app.UsageError(str(e))
    for p in paths:
        print(p)


if __name__ == "__main__":
    define_flags()
    app.run(main)
