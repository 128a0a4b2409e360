"""``Configurable``: value semantics for small config-defined objects (quantizers, surrogates).

Subclasses define ``get_config()`` (constructor kwargs); they get ``from_config``, equality and
hashing by (type, config), and a ``Name(k=v, ...)`` repr. No tfsnn imports.
"""


class Configurable:
    def get_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __eq__(self, other):
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __hash__(self):
        return hash((type(self).__name__, tuple(sorted(self.get_config().items()))))

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"
