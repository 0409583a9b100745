"""featlab's Hydra launcher plugin (``hydra/launcher=local_gpus``); Hydra discovers it here."""
