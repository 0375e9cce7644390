"""Backbones by name, for the command line and configuration files."""

from tfrobust.models import preact_resnet as _preact_resnet
from tfrobust.models import small_cnn as _small_cnn
from tfrobust.models import wide_resnet as _wide_resnet

_MODULES = {
    "small_cnn": (_small_cnn, _small_cnn.small_cnn),
    "preact_resnet18": (_preact_resnet, _preact_resnet.preact_resnet18),
    "wide_resnet": (_wide_resnet, _wide_resnet.wide_resnet),
}
BACKBONES = {name: builder for name, (_, builder) in _MODULES.items()}


def backbone_key(name):
    key = name.lower().replace("-", "_") if isinstance(name, str) else name
    if not isinstance(key, str) or key not in BACKBONES:
        raise ValueError(f"Expected model to be one of {sorted(BACKBONES)}. "
                         f"Received: model={name!r}")
    return key


def get_backbone(name, input_shape, **kwargs):
    """Build the backbone called `name` for images of `input_shape`.

    Extra keyword arguments go to the builder (e.g. `depth`, `width` for
    `wide_resnet`; `mean`, `std` for any).
    """
    return BACKBONES[backbone_key(name)](input_shape=tuple(input_shape), **kwargs)


def reference_latent_name(name):
    """The layer ADR reads by default on the backbone called `name` (its `REFERENCE_LATENT`)."""
    return _MODULES[backbone_key(name)][0].REFERENCE_LATENT


def initializations(name):
    """The initialisations the backbone called `name` offers; the first is its default."""
    return getattr(_MODULES[backbone_key(name)][0], "INITIALIZATIONS", ("reference",))


def head_initializer(name, initialization=None):
    """The initialiser of a dense head on the backbone `name` with `initialization`."""
    heads = getattr(_MODULES[backbone_key(name)][0], "HEAD_INITIALIZERS", {})
    return heads.get(initialization or initializations(name)[0], "glorot_uniform")
