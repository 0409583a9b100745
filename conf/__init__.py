"""featlab's Hydra configs, shipped inside the package as ``featlab.conf`` (``pkg://featlab.conf``)."""
