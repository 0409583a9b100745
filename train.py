"""``python train.py experiment=<name> [overrides]``: see featlab.train."""

from featlab.train import cli

if __name__ == "__main__":
    cli()
