"""Custom Keras layers (the hypersphere classification head lives here)."""

__all__ = []
