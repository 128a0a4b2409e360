"""The run-directory flags shared by ``train_quant.py`` and ``train_snn.py`` (one definition;
absl only, no TensorFlow import, so ``train_quant.py --qat_backend tfmot`` can still pick its
Keras before TensorFlow loads). The values are checked by ``tfsnn.runs.check_run_options``.
"""
from absl import flags

HELP = {
    "epochs": "Total training epochs, including those done before --resume",
    "batch_size": "Batch size",
    "resume": "Continue from the run dir's last checkpoint (next epoch, optimizer state kept)",
    "overwrite": "Start anew in a run dir that already holds a run",
    "run_dir": "Run directory",
    "max_train_examples": "Train on the first N training images (0 = all)",
    "max_test_examples": "Test on the first N test images (0 = all)",
    "validation_examples": "Images held out from the end of the training split for per-epoch "
                           "validation (0 = none; at most a fifth of the split)",
    "seed": "Seed of initialization and shuffling",
    "strategy": "tf.distribute strategy (multi_worker reads TF_CONFIG)",
    "tensorboard": "Write TensorBoard events under <run_dir>/tb",
}
RUN_FLAGS = tuple(HELP)
STRATEGIES = ("default", "mirrored", "multi_worker")
_KIND = {"epochs": flags.DEFINE_integer, "batch_size": flags.DEFINE_integer,
         "resume": flags.DEFINE_bool, "overwrite": flags.DEFINE_bool,
         "run_dir": flags.DEFINE_string, "max_train_examples": flags.DEFINE_integer,
         "max_test_examples": flags.DEFINE_integer, "validation_examples": flags.DEFINE_integer,
         "seed": flags.DEFINE_integer, "tensorboard": flags.DEFINE_bool}


def define(defaults, notes=None):
    """Define every flag of ``RUN_FLAGS``: ``defaults`` ``{name: default}`` (missing = None),
    ``notes`` ``{name: text}`` shown in parentheses after the shared help text."""
    notes = notes or {}
    for name in RUN_FLAGS:
        text = HELP[name] + (f" ({notes[name]})." if name in notes else ".")
        if name == "strategy":
            flags.DEFINE_enum(name, defaults.get(name), list(STRATEGIES), text)
        else:
            _KIND[name](name, defaults.get(name), text)


def guarded(fn):
    """Run ``fn()`` (a script's work, after the flags are parsed) and turn expected failures into
    a message and exit code != 0, no traceback: a bad flag (``ConfigError``) becomes absl's
    ``UsageError``; a run that cannot go on (``RunError``: locked run dir, damaged file,
    diverged), a dataset that cannot be read, or a file-system error (full disk, read-only)
    prints ``error: <message>`` on stderr and exits with status 1."""
    import sys

    from absl import app

    from tfsnn import runs
    from tfsnn.data import loaders
    try:
        return fn()
    except runs.ConfigError as e:
        raise app.UsageError(str(e))
    except (runs.RunError, loaders.DatasetFileError, OSError) as e:
        msg = str(e) if not isinstance(e, OSError) or isinstance(
            e, loaders.DatasetNotFoundError) else _os_message(e)
        sys.stderr.write(f"error: {msg}\n")
        sys.stderr.flush()
        sys.exit(1)


def _os_message(e):
    where = f"{e.filename}: " if getattr(e, "filename", None) else ""
    return f"{where}{e.strerror or e} ({type(e).__name__})"
