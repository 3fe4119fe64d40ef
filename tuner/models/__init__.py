"""Models: the backbone registry, pretrained weights and the classifier trials train."""

from tuner.models.backbones import create_backbone, get_spec, list_backbones, register_backbone
from tuner.models.classifier import Classifier, ModelArgs, build_model
from tuner.models.weights import TRANSFERS

__all__ = [
    "TRANSFERS",
    "Classifier",
    "ModelArgs",
    "build_model",
    "create_backbone",
    "get_spec",
    "list_backbones",
    "register_backbone",
]
