"""Trainable networks.

Each family lives in its own module or sub-package (``featlab.nets.sr`` for super-resolution and
restoration); this file imports none of them, so building one network never pays for the others.
"""
