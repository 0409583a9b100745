"""One backbone layer for every task: named pretrained backbones with named layer taps.

``create(name, layers=[...])`` returns a :class:`FeatureExtractor`: pixels in [0, 1] in,
``{layer: features}`` out, from one pass through a network truncated after the deepest requested
layer, with the backbone's own resizing and mean/std applied inside. See ``vit.py`` and
``staged.py`` for the layer tables and where each family is tapped.
"""

from featlab.backbones import catalog as _catalog  # noqa: F401  (registers the shipped backbones)
from featlab.backbones.checkpoints import load_checkpoint_file, read_checkpoint, save_backbone
from featlab.backbones.extractor import FeatureExtractor
from featlab.backbones.factory import create
from featlab.backbones.featnorm import FEATURE_NORMS
from featlab.backbones.registry import BackboneSpec, available, get_spec, register_backbone

__all__ = [
    "FEATURE_NORMS",
    "BackboneSpec",
    "FeatureExtractor",
    "available",
    "create",
    "get_spec",
    "load_checkpoint_file",
    "read_checkpoint",
    "register_backbone",
    "save_backbone",
]
