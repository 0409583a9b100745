"""One backbone layer for every task: named pretrained backbones with named layer taps.

``create(name, layers=[...])`` returns a :class:`FeatureExtractor`: pixels in [0, 1] in,
``{layer: features}`` out, from one pass through a network truncated after the deepest requested
layer, with the backbone's own resizing and mean/std applied inside. See ``vit.py`` and
``staged.py`` for the layer tables and where each family is tapped.
"""

# catalog and edgeface register their names on import, so `create(name)` (and Hydra's
# `_target_: featlab.backbones.create`) knows every backbone without callers importing them.
from featlab.backbones import catalog as _catalog  # noqa: F401
from featlab.backbones import control as _control  # noqa: F401
from featlab.backbones import edgeface as _edgeface  # noqa: F401
from featlab.backbones.checkpoints import load_checkpoint_file, read_checkpoint, save_backbone
from featlab.backbones.extractor import FeatureExtractor
from featlab.backbones.factory import create
from featlab.backbones.featnorm import FEATURE_NORMS
from featlab.backbones.registry import BackboneSpec, available, get_spec, register_backbone, register_kind

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
    "register_kind",
    "save_backbone",
]
