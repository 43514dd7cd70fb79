import pytest
import torch
import torch.nn.functional as F

from deeptrain.data import BatchAugment
from deeptrain.data.augment import random_crop, random_hflip

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def batch(b=64, c=3, h=8, w=8, device="cpu"):
    g = torch.Generator().manual_seed(0)
    return torch.randint(1, 256, (b, c, h, w), generator=g, dtype=torch.uint8).to(device)  # no zeros: padding shows


def test_identity_when_off():
    x = batch()
    aug = BatchAugment()
    assert not aug.enabled and aug(x) is x


@pytest.mark.parametrize("device", DEVICES)
def test_flip_decides_per_sample(device):
    x = batch(device=device)
    torch.manual_seed(0)
    out = random_hflip(x)
    flipped = torch.tensor([torch.equal(o, xi.flip(-1)) for o, xi in zip(out, x)])
    kept = torch.tensor([torch.equal(o, xi) for o, xi in zip(out, x)])
    assert bool((flipped ^ kept).all())  # each image is itself or its mirror
    assert 10 < int(flipped.sum()) < 54  # some flipped, some not


@pytest.mark.parametrize("device", DEVICES)
def test_crop_takes_a_window_of_the_padded_image_per_sample(device):
    x, p = batch(device=device), 2
    torch.manual_seed(0)
    out = random_crop(x, p)
    assert out.shape == x.shape and out.dtype == torch.uint8 and out.device == x.device
    padded = F.pad(x, (p, p, p, p))
    offsets = []
    for o, xp in zip(out, padded):
        hits = [(t, l) for t in range(2 * p + 1) for l in range(2 * p + 1) if torch.equal(o, xp[:, t:t + 8, l:l + 8])]
        assert hits, "output is not a window of the padded image"
        offsets.append(hits[0])
    assert len(set(offsets)) > 5  # offsets differ across the batch
    assert (p, p) in offsets  # the centre window is the original image


def test_zero_offset_keeps_the_content():
    x = batch()
    assert torch.equal(random_crop(x, 0), x)
    aug = BatchAugment(crop_padding=3)
    g = torch.Generator().manual_seed(0)
    out = aug(x, generator=g)
    top_left = torch.randint(0, 7, (2, 64), generator=torch.Generator().manual_seed(0))
    centred = (top_left == 3).all(0)
    assert centred.any() and torch.equal(out[centred], x[centred])


def test_seeded_and_shape_preserving():
    x, aug = batch(), BatchAugment(hflip=True, crop_padding=4)
    torch.manual_seed(1)
    a = aug(x)
    torch.manual_seed(1)
    assert torch.equal(a, aug(x)) and a.shape == x.shape and not torch.equal(a, x)


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="crop_padding"):
        BatchAugment(crop_padding=-1)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        BatchAugment(hflip=True)(torch.zeros(3, 8, 8, dtype=torch.uint8))
