"""Each backbone's reference latent: the tensor ADR reads unless told otherwise.

The ADR regularisers (Bui et al. 2020) act on an intermediate representation
whose choice decides whether training works at all: on the TRADES SmallCNN
the reference reads the flattened convolutional features (1,024 values),
and ADR applied to the 200-unit output of the fully connected layers instead
collapsed on the network without dropout (SPEC section 3). A backbone builder
therefore declares which of its layers is the reference latent; `RobustModel`
resolves an ADR objective without a `layer` to it, and saves the resolved
name in its config.
"""

_ATTRIBUTE = "reference_latent"


def declare_reference_latent(backbone, layer_name):
    """Mark `layer_name` as the layer of `backbone` that ADR reads by default.

    The declaration lives on the Python object only; a saved model needs no
    declaration because `RobustModel` writes the resolved layer name into its
    ADR objective's config.
    """
    backbone.get_layer(layer_name)  # raises ValueError naming the layer if it is absent
    setattr(backbone, _ATTRIBUTE, layer_name)
    return backbone


def output_layer_name(backbone):
    """The name of the layer producing a functional or Sequential backbone's output, or None."""
    outputs = getattr(backbone, "outputs", None)
    if outputs and len(outputs) == 1:
        history = getattr(outputs[0], "_keras_history", None)
        if history is not None:
            return history.operation.name
    layers = getattr(backbone, "layers", None)
    return layers[-1].name if layers else None


def reference_latent(backbone):
    """The layer name ADR reads on `backbone` when no `layer` is given.

    The declared reference latent if the builder declared one (every
    `tfrobust.models` backbone does), otherwise the layer producing the
    backbone's output (the feature vector the head reads), otherwise `None`
    (a subclassed backbone: ADR then reads the feature vector directly).
    """
    declared = getattr(backbone, _ATTRIBUTE, None)
    if declared is not None:
        return declared
    return output_layer_name(backbone)
