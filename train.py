"""``python train.py experiment=<name> [overrides]``: see featlab.train."""

from featlab.train import main

if __name__ == "__main__":
    main()
