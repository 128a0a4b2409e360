"""Integer-valued arguments (counts, bit numbers, levels): one check, one error message."""


def check_integer(value, name, minimum=0):
    """``value`` as an ``int`` if it equals an integer ``>= minimum`` (``3`` and ``3.0`` pass);
    else ``ValueError("<name> must be an integer >= <minimum>, got <value!r>")``."""
    if int(value) != value or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)
