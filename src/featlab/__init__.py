"""featlab: what are pretrained vision features good for?

Four tasks share one backbone layer (:mod:`featlab.backbones`), data modules, losses, metrics and
callbacks; each task in :mod:`featlab.tasks` only wires them together.
"""

__version__ = "0.1.0"
