"""Tasks as configs: class subsets with remapped labels, small seeded training sets, the rotation pretext."""

import pytest
import torch
from torchvision.datasets import FashionMNIST
from image_helpers import make_image_folder

from deeptrain.data import ImageDataModule
from deeptrain.data.pretext import RotationPretext
from deeptrain.data.subsets import remap_labels, sample_subset

TASK_A = [0, 1, 2, 3, 4, 7, 8, 9]  # Fashion-MNIST without sandal (5) and shirt (6)


def folder_dm(tmp_path, **kw):
    """30 train images of classes a, b, c (10 each, pixel value = image id 0..29) and 3 x 2 test images."""
    root = tmp_path / "imgs"
    if not root.exists():
        make_image_folder(root / "train", {"a": 10, "b": 10, "c": 10})
        make_image_folder(root / "test", {"a": 2, "b": 2, "c": 2}, start=100)
    return ImageDataModule("image_folder", data_dir=str(root), val_size=6, cache_dir=str(tmp_path / "cache"), **kw)


def source_class(split):
    """Folder images carry their id as pixel value: ids 0-9 are class a (0), 10-19 b (1), 20-29 c (2)."""
    return split.images[:, 0, 0, 0].long() // 10


def test_task_b_split_is_200_shirts_and_sandals_labelled_0_1(fashion_dir):
    dm = ImageDataModule("fashion_mnist", data_dir=str(fashion_dir), classes=[5, 6], train_size=200, subset_seed=0)
    assert (dm.num_classes, dm.class_names) == (2, ["Sandal", "Shirt"])  # before setup: the CLI links these
    dm.setup("fit")
    train, test = dm.split("train"), dm.split("test")
    assert len(train) == 200 and set(train.labels.tolist()) == {0, 1}
    source = FashionMNIST(str(fashion_dir), train=True).targets
    assert torch.equal(source[dm.split_indices["train"]], train.labels + 5)  # shirt (6) is the positive label 1
    assert len(test) == 2000 and torch.bincount(test.labels).tolist() == [1000, 1000]
    assert set(dm.split("val").labels.tolist()) == {0, 1}


def test_task_a_keeps_the_validation_images_of_the_full_split(fashion_dir):
    full = ImageDataModule("fashion_mnist", data_dir=str(fashion_dir))
    task_a = ImageDataModule("fashion_mnist", data_dir=str(fashion_dir), classes=TASK_A)
    full.setup(), task_a.setup()
    assert task_a.num_classes == 8 and "Sandal" not in task_a.class_names and "Shirt" not in task_a.class_names
    keep = ~torch.isin(full.split("val").labels, torch.tensor([5, 6]))
    assert torch.equal(task_a.split_indices["val"], full.split_indices["val"][keep])
    assert torch.equal(task_a.split("val").labels, remap_labels(full.split("val").labels[keep], TASK_A))
    assert len(task_a.split("train")) == 43992 and int(task_a.split("train").labels.max()) == 7


def test_classes_are_remapped_in_the_order_listed_in_every_split(tmp_path):
    dm = folder_dm(tmp_path, classes=[2, 0])  # c -> 0, a -> 1; b dropped
    assert dm.class_names == ["c", "a"]
    dm.setup()
    for name in ("train", "val"):
        split = dm.split(name)
        assert torch.equal(split.labels, torch.where(source_class(split) == 2, 0, 1))
    test = dm.split("test")
    assert torch.equal(test.images[:, 0, 0, 0], torch.tensor([100, 101, 104, 105], dtype=torch.uint8))
    assert test.labels.tolist() == [1, 1, 0, 0]


def test_train_size_is_a_seeded_draw_from_the_training_split_only(tmp_path):
    def draw(**kw):
        dm = folder_dm(tmp_path, train_size=7, **kw)
        dm.setup()
        return dm

    a, b, c = draw(subset_seed=1), draw(subset_seed=1), draw(subset_seed=2)
    assert len(a.split("train")) == 7 and torch.equal(a.split_indices["train"], b.split_indices["train"])
    assert not torch.equal(a.split_indices["train"], c.split_indices["train"])
    assert torch.equal(a.split_indices["val"], c.split_indices["val"]) and len(a.split("val")) == 6
    assert not set(a.split_indices["train"].tolist()) & set(a.split_indices["val"].tolist())


def test_train_size_per_class_is_stratified_and_exact():
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 5)
    idx = sample_subset(labels, per_class=4, seed=0)
    assert torch.bincount(labels[idx]).tolist() == [4, 4, 4] and len(set(idx.tolist())) == 12
    assert not torch.equal(idx, sample_subset(labels, per_class=4, seed=1))
    with pytest.raises(ValueError, match="train_size_per_class=6: class 2 has only 5"):
        sample_subset(labels, per_class=6)
    with pytest.raises(ValueError, match=r"train_size=86: expected an int in \[1, 85\]"):
        sample_subset(labels, total=86)


@pytest.mark.parametrize("kw, message", [
    ({"classes": [5]}, "classes=[5]: expected a list of at least 2 distinct class ids in [0, 9]"),
    ({"classes": [5, 5]}, "classes=[5, 5]"),
    ({"classes": [5, 10]}, "out of range: [10]"),
    ({"train_size": 0}, "train_size=0"),
    ({"train_size": 10, "train_size_per_class": 5}, "train_size_per_class=5: expected None when train_size=10"),
    ({"pretext": "jigsaw"}, "pretext='jigsaw': expected None or one of ['rotation']"),
])
def test_bad_task_options_name_the_value_and_the_choices(kw, message):
    with pytest.raises(ValueError) as err:
        ImageDataModule("fashion_mnist", **kw)
    assert message in str(err.value)


def test_rotation_pretext_rotates_each_image_and_labels_it_with_k():
    x = torch.randint(0, 256, (64, 1, 5, 5), dtype=torch.uint8)
    out, k = RotationPretext()(x, torch.zeros(64, dtype=torch.long), train=True)
    assert set(k.tolist()) == {0, 1, 2, 3}
    for i in range(64):
        assert torch.equal(out[i], torch.rot90(x[i], int(k[i]), dims=(-2, -1)))
    _, k_eval = RotationPretext()(x, k, train=False)
    assert k_eval.tolist() == [i % 4 for i in range(64)]


def test_rotation_pretext_sets_the_classes_and_needs_square_images(tmp_path):
    dm = ImageDataModule("fashion_mnist", data_dir=str(tmp_path), pretext="rotation")
    assert dm.num_classes == 4
    with pytest.raises(ValueError, match=r"square images, got input_shape=\(1, 28, 20\)"):
        RotationPretext().check_shape((1, 28, 20))
