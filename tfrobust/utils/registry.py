"""Name registries for serialisable configuration objects (attacks, objectives, regularisers)."""

import keras


class Registry:
    """Classes by name, looked up the way `keras.losses.get` works.

    Args:
        kind: what the registry holds, for error messages ("attack", "objective").
        base: the base class whose instances `get` passes through unchanged.
    """

    def __init__(self, kind, base):
        self.kind = kind
        self.base = base
        self._classes = {}

    def register(self, name):
        """Class decorator: serialisable for `.keras` files and findable as `get(name)`."""

        def wrap(cls):
            cls = keras.saving.register_keras_serializable(package="tfrobust")(cls)
            cls.registry_name = name
            self._classes[name] = cls
            return cls

        return wrap

    def get(self, identifier, **kwargs):
        """An instance from a name (built with `kwargs`), a config dict, or an instance."""
        if isinstance(identifier, self.base):
            return identifier
        if isinstance(identifier, dict):
            return keras.saving.deserialize_keras_object(identifier)
        if isinstance(identifier, str) and identifier.lower() in self._classes:
            return self._classes[identifier.lower()](**kwargs)
        raise ValueError(
            f"Expected {self.kind} to be a name in {self.names()}, a config dict or a "
            f"{self.base.__name__}. Received: {self.kind}={identifier!r}"
        )

    def names(self):
        return sorted(self._classes)

    def get_class(self, name):
        """The class registered under `name`."""
        key = name.lower() if isinstance(name, str) else name
        if key not in self._classes:
            raise ValueError(f"Expected {self.kind} to be a name in {self.names()}. "
                             f"Received: {self.kind}={name!r}")
        return self._classes[key]
