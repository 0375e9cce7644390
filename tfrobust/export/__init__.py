"""Deployment: the inference model as a TensorFlow Serving SavedModel, written atomically."""

from tfrobust.export.saved_model import (IMAGE_BYTES, IMAGES, OUTPUTS, SERVING_BYTES,
                                         SERVING_DEFAULT, ExportResult, export_saved_model)
from tfrobust.export.versions import existing_versions, next_version, write_version

__all__ = ["IMAGES", "IMAGE_BYTES", "OUTPUTS", "SERVING_BYTES", "SERVING_DEFAULT", "ExportResult",
           "existing_versions", "export_saved_model", "next_version", "write_version"]
