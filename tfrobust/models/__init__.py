"""Backbones (images to features) and `RobustModel` (backbone + head + objective)."""

from tfrobust.models.latent import reference_latent
from tfrobust.models.loading import load_model
from tfrobust.models.preact_resnet import preact_resnet18
from tfrobust.models.zoo import pretrained
from tfrobust.models.registry import BACKBONES, get_backbone, reference_latent_name
from tfrobust.models.robust_model import RobustModel
from tfrobust.models.small_cnn import small_cnn
from tfrobust.models.wide_resnet import wide_resnet

__all__ = ["BACKBONES", "RobustModel", "get_backbone", "load_model", "preact_resnet18",
           "pretrained", "reference_latent", "reference_latent_name", "small_cnn", "wide_resnet"]
