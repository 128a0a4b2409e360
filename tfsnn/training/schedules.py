"""Step learning-rate schedules of the seed papers' recipes (Keras ``LearningRateSchedule``s
over optimizer steps)."""
import keras


def multistep_lr(lr, milestones, gamma, steps_per_epoch):
    """PyTorch MultiStepLR (stepped per epoch) as a per-step piecewise-constant schedule: epoch
    ``e`` (0-based, optimizer steps ``e*S .. e*S+S-1``) uses ``lr * gamma^#{m <= e}``."""
    if not milestones:
        return lr
    # Keras keeps values[i] while step <= boundaries[i]
    return keras.optimizers.schedules.PiecewiseConstantDecay(
        [int(m * steps_per_epoch) - 1 for m in milestones],
        [lr * gamma ** i for i in range(len(milestones) + 1)])


def step_decay(learning_rate, epochs, steps_per_epoch, reduce=10.0,
               at=(0.6, 0.8, 0.9)):
    """Rathi's schedule: ``lr / reduce`` at floor(0.6 E), floor(0.8 E), floor(0.9 E) epochs."""
    # PiecewiseConstantDecay switches *after* a boundary step; optimizer steps count from 0.
    bounds = sorted({int(f * epochs) * int(steps_per_epoch) - 1 for f in at} - {-1})
    if not bounds:
        return float(learning_rate)
    values = [learning_rate / reduce ** i for i in range(len(bounds) + 1)]
    return keras.optimizers.schedules.PiecewiseConstantDecay(bounds, values)


def parse_milestones(v, need, flag="lr_milestones"):
    """``"50,100"`` or a sequence -> sorted list of epoch numbers (``need`` reports errors)."""
    try:
        ms = [int(m) for m in (v.split(",") if isinstance(v, str) else v) if str(m).strip()]
    except (TypeError, ValueError):
        ms = None
    need(ms is not None and ms == sorted(ms) and all(m >= 1 for m in ms), flag,
         "must be increasing epoch numbers >= 1, e.g. 50,100")
    return ms
