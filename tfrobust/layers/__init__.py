"""Custom Keras layers: the hypersphere embedding head."""

from tfrobust.layers.hypersphere import HypersphereDense

__all__ = ["HypersphereDense"]
