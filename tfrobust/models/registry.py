"""Backbones by name, for the command line and configuration files."""

from tfrobust.models.preact_resnet import preact_resnet18
from tfrobust.models.small_cnn import small_cnn
from tfrobust.models.wide_resnet import wide_resnet

BACKBONES = {
    "small_cnn": small_cnn,
    "preact_resnet18": preact_resnet18,
    "wide_resnet": wide_resnet,
}


def get_backbone(name, input_shape, **kwargs):
    """Build the backbone called `name` for images of `input_shape`.

    Extra keyword arguments go to the builder (e.g. `depth`, `width` for
    `wide_resnet`; `mean`, `std` for any).
    """
    key = name.lower().replace("-", "_") if isinstance(name, str) else name
    if key not in BACKBONES:
        raise ValueError(f"Expected model to be one of {sorted(BACKBONES)}. Received: model={name!r}")
    return BACKBONES[key](input_shape=tuple(input_shape), **kwargs)
