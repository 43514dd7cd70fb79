import math
import warnings
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from image_helpers import make_image_folder
from lightning.pytorch.callbacks import ModelCheckpoint

from deeptrain.data import ImageDataModule, InMemoryLoader
from deeptrain.data.datamodule import MIN_STD

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(scope="module")
def fashion(fashion_dir) -> ImageDataModule:
    dm = ImageDataModule("fashion_mnist", data_dir=str(fashion_dir))
    dm.setup("fit")
    return dm


def fake_trainer(device="cpu", training=True, **kw):
    return SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device(device)), training=training,
                           global_rank=kw.get("rank", 0), world_size=kw.get("world_size", 1), current_epoch=0)


def test_shape_and_classes_are_known_before_setup(tmp_path):
    dm = ImageDataModule("fashion_mnist", data_dir=str(tmp_path))  # no data needed yet
    assert (dm.input_shape, dm.num_classes, dm.class_names[-1]) == ((1, 28, 28), 10, "Ankle boot")
    dm = ImageDataModule("cifar10", data_dir=str(tmp_path))
    assert (dm.input_shape, dm.num_classes, dm.class_names[0]) == ((3, 32, 32), 10, "airplane")


@pytest.mark.parametrize("key, value, expected", [
    ("dataset", "mnist", "fashion_mnist"), ("normalize", "zscore", "standardize"), ("val_size", -1, ">= 0"),
    ("batch_size", 0, ">= 1"), ("eval_batch_size", 0, ">= 1"), ("crop_padding", -2, ">= 0"),
    ("image_size", 0, ">= 1"), ("split_seed", "x", "an int"),
])
def test_bad_arguments_name_the_key_value_and_choices(key, value, expected):
    with pytest.raises(ValueError) as err:
        ImageDataModule(**{key: value})
    assert f"{key}={value!r}" in str(err.value) and expected in str(err.value)


def test_fashion_mnist_split_sizes_shapes_and_dtypes(fashion):
    sizes = {name: len(fashion.split(name)) for name in ("train", "val", "test", "predict")}
    assert sizes == {"train": 55000, "val": 5000, "test": 10000, "predict": 10000}
    for name in ("train", "val", "test"):
        split = fashion.split(name)
        assert split.images.shape[1:] == (1, 28, 28) and split.images.dtype == torch.uint8
        assert split.labels.dtype == torch.int64


def test_split_is_disjoint_and_deterministic(fashion, fashion_dir):
    train, val = fashion.split_indices["train"], fashion.split_indices["val"]
    assert torch.equal(torch.cat([train, val]).sort().values, torch.arange(60000))
    again = ImageDataModule("fashion_mnist", data_dir=str(fashion_dir))
    again.setup()
    assert torch.equal(again.split_indices["val"], val)
    assert torch.equal(again.split("val").images, fashion.split("val").images)
    other = ImageDataModule("fashion_mnist", data_dir=str(fashion_dir), split_seed=0, val_size=1000)
    other.setup()
    assert len(other.split("train")) == 59000 and len(other.split("val")) == 1000
    assert not torch.equal(other.split_indices["val"], val[:1000])


def test_standardize_statistics_come_from_the_training_split_only(fashion):
    mean, std = fashion.input_stats()
    assert mean.shape == std.shape == (1, 28, 28) and mean.dtype == std.dtype == torch.float32
    train = fashion.split("train").images.float()
    direct_mean = train.mean(0)
    direct_std = (train - direct_mean).square().mean(0).sqrt()
    assert torch.allclose(mean, direct_mean, atol=1e-3)
    assert torch.allclose(std, direct_std.clamp_min(MIN_STD), atol=1e-3)
    with_val = torch.cat([train, fashion.split("val").images.float()])
    assert (mean - with_val.mean(0)).abs().max() > 0.01


@pytest.mark.parametrize("normalize, std", [("scale", 255.0), ("none", 1.0)])
def test_scale_and_none_statistics(normalize, std, tmp_path):
    mean, s = ImageDataModule("fashion_mnist", data_dir=str(tmp_path), normalize=normalize).input_stats()
    assert mean.shape == (1, 28, 28) and bool((mean == 0).all()) and bool((s == std).all())


def test_loaders(fashion):
    train = fashion.train_dataloader()
    assert isinstance(train, InMemoryLoader) and train.shuffle and len(train) == math.ceil(55000 / 32)
    x, y = next(iter(train))
    assert x.shape == (32, 1, 28, 28) and x.dtype == torch.uint8 and y.shape == (32,) and y.dtype == torch.int64
    val = fashion.val_dataloader()
    assert not val.shuffle and val.batch_size == 1000 and len(val) == 5
    assert len(fashion.test_dataloader()) == len(fashion.predict_dataloader()) == 10


def test_shuffle_seed_defaults_to_the_global_seed(fashion, monkeypatch):
    def first_labels():
        return next(iter(fashion.train_dataloader()))[1]

    monkeypatch.setenv("PL_GLOBAL_SEED", "1")
    a, b = first_labels(), first_labels()
    monkeypatch.setenv("PL_GLOBAL_SEED", "2")
    assert torch.equal(a, b) and not torch.equal(a, first_labels())


@pytest.mark.parametrize("device", DEVICES)
def test_augmentation_runs_on_training_batches_only(device):
    dm = ImageDataModule("fashion_mnist", hflip=True)
    x = torch.randint(0, 256, (64, 1, 28, 28), dtype=torch.uint8, device=device)
    y = torch.zeros(64, dtype=torch.int64, device=device)
    dm.trainer = fake_trainer(device, training=False)
    assert dm.on_after_batch_transfer((x, y), 0)[0] is x
    dm.trainer = fake_trainer(device, training=True)
    out, labels = dm.on_after_batch_transfer((x, y), 0)
    assert out.shape == x.shape and out.device == x.device and not torch.equal(out, x) and labels is y


def test_image_folder_without_test_split_uses_val_with_a_warning(tmp_path):
    make_image_folder(tmp_path / "imgs" / "train", {"a": 5, "b": 5})
    dm = ImageDataModule("image_folder", data_dir=str(tmp_path / "imgs"), val_size=3, cache_dir=str(tmp_path / "c"))
    assert (dm.input_shape, dm.class_names) == ((3, 8, 8), ["a", "b"])
    dm.setup("fit")
    assert len(dm.split("train")) == 7
    with pytest.warns(UserWarning, match="no test split"):
        test = dm.test_dataloader()
    assert torch.equal(torch.cat([y for _, y in test]), dm.split("val").labels)


def test_val_size_must_leave_training_examples(tmp_path):
    make_image_folder(tmp_path / "imgs" / "train", {"a": 2, "b": 2})
    dm = ImageDataModule("image_folder", data_dir=str(tmp_path / "imgs"), val_size=4, cache_dir=str(tmp_path / "c"))
    with pytest.raises(ValueError, match="val_size=4.*fewer than the 4"):
        dm.setup()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_loaders_serve_device_tensors_moved_once(tmp_path):
    make_image_folder(tmp_path / "imgs" / "train", {"a": 5, "b": 5})
    dm = ImageDataModule("image_folder", data_dir=str(tmp_path / "imgs"), val_size=3, cache_dir=str(tmp_path / "c"))
    dm.trainer = fake_trainer("cuda")
    x, y = next(iter(dm.train_dataloader()))
    assert x.is_cuda and x.dtype == torch.uint8 and y.is_cuda
    assert dm.val_dataloader().images.data_ptr() == dm.val_dataloader().images.data_ptr()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert dm.test_dataloader().images.data_ptr() == dm.val_dataloader().images.data_ptr()
    assert not dm.split("train").images.is_cuda  # the CPU copy stays for statistics


class Recorder(L.LightningModule):
    """Records the id (pixel value) of every training image it sees."""

    def __init__(self, read_stepping_batches: bool = False):
        super().__init__()
        self.layer = torch.nn.Linear(1, 2)
        self.read_stepping_batches = read_stepping_batches
        self.seen: list[int] = []

    def training_step(self, batch, batch_idx):
        x, y = batch
        self.seen += x[:, 0, 0, 0].tolist()
        return torch.nn.functional.cross_entropy(self.layer(x[:, :1, 0, 0].float() / 255), y)

    def configure_optimizers(self):
        if self.read_stepping_batches:  # e.g. OneCycleLR: builds the train loader before the checkpoint loads
            assert self.trainer.estimated_stepping_batches > 0
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.parametrize("read_stepping_batches", [False, True])
@pytest.mark.parametrize("accelerator", ["cpu"] + (["gpu"] if torch.cuda.is_available() else []))
def test_lightning_resumes_mid_epoch_with_the_same_order(tmp_path, read_stepping_batches, accelerator):
    make_image_folder(tmp_path / "imgs" / "train", {"a": 11, "b": 11})  # 22 images, ids 0..21

    def fit(max_steps=-1, ckpt_path=None, callbacks=()):
        dm = ImageDataModule("image_folder", data_dir=str(tmp_path / "imgs"), val_size=2, batch_size=3,
                             cache_dir=str(tmp_path / "cache"), shuffle_seed=7)  # 20 train: 7 batches
        model = Recorder(read_stepping_batches)
        trainer = L.Trainer(accelerator=accelerator, devices=1, max_epochs=2, max_steps=max_steps, logger=False,
                            enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                            num_sanity_val_steps=0, enable_checkpointing=bool(callbacks), callbacks=list(callbacks),
                            default_root_dir=tmp_path, log_every_n_steps=1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer.fit(model, dm, ckpt_path=ckpt_path)
        return model.seen

    full = fit()
    assert len(full) == 40 and sorted(full[:20]) == sorted(full[20:]) and full[:20] != full[20:]
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=9, save_top_k=-1)
    first = fit(max_steps=9, callbacks=[ckpt])  # stops in epoch 1, after its 2nd batch
    resumed = fit(ckpt_path=str(next((tmp_path / "ckpt").glob("*.ckpt"))))
    assert first == full[:26] and first + resumed == full


def test_an_empty_class_folder_is_an_error_naming_it(tmp_path):
    root = tmp_path / "images"
    make_image_folder(root / "train", {"a": 3, "b": 3, "c": 3})
    (root / "train" / "d").mkdir()
    with pytest.raises(ValueError, match=rf"class folder\(s\) {root / 'train' / 'd'} hold no images .* remove the folder"):
        ImageDataModule("image_folder", data_dir=str(root), val_size=2, cache_dir=str(tmp_path / "cache"))


def test_a_single_class_folder_is_an_error_naming_it_unless_a_pretext_task_makes_the_labels(tmp_path):
    root = tmp_path / "images"
    make_image_folder(root / "train", {"only": 4}, size=(8, 8))
    with pytest.raises(ValueError, match=rf"image_folder in {root} has 1 class folder \['only'\]; a classifier needs at least 2"):
        ImageDataModule("image_folder", data_dir=str(root), val_size=2, cache_dir=str(tmp_path / "cache"))
    dm = ImageDataModule("image_folder", data_dir=str(root), val_size=2, cache_dir=str(tmp_path / "cache"),
                         pretext="rotation")
    assert dm.num_classes == 4
