"""The generated labelled set: deterministic, balanced, varied, written in the labelled-folder layout."""

from __future__ import annotations

import numpy as np
import pytest

from featlab.data.images import list_class_folders
from featlab.data.synthetic_shapes import SHAPE_CLASSES, make_shapes, write_shapes_folder
from featlab.errors import ConfigError


def test_same_seed_same_images_other_seed_other_images():
    images, labels = make_shapes(2, size=24, seed=3)
    again, _ = make_shapes(2, size=24, seed=3)
    other, _ = make_shapes(2, size=24, seed=4)
    assert images.shape == (20, 24, 24, 3) and images.dtype == np.uint8
    assert np.array_equal(images, again) and not np.array_equal(images, other)
    assert np.bincount(labels).tolist() == [2] * len(SHAPE_CLASSES)


def test_image_i_does_not_depend_on_the_set_size():
    small, _ = make_shapes(1, size=16, seed=0)
    large, _ = make_shapes(3, size=16, seed=0)
    assert np.array_equal(small, large[:10])


def test_images_of_one_class_differ_in_colour_and_pose():
    images, labels = make_shapes(4, size=24, seed=0)
    disks = images[labels == 0].astype(float)
    assert np.abs(disks[0] - disks[1]).mean() > 10


def test_folder_layout_is_readable_as_labelled_folders(tmp_path):
    root = write_shapes_folder(tmp_path / "shapes", 1, size=16)
    classes = list_class_folders(root, "data.knn_root", min_classes=2)
    assert sorted(classes) == sorted(SHAPE_CLASSES) and all(len(v) == 1 for v in classes.values())


def test_bad_sizes_name_their_key():
    with pytest.raises(ConfigError, match="data.synthetic.n_per_class"):
        make_shapes(0)
    with pytest.raises(ConfigError, match="data.synthetic.size"):
        make_shapes(1, size=4)
