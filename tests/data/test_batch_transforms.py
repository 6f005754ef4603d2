"""Batched augmentation against torchvision's per-image transforms, and its statistics.

Each operation is replayed image by image with torchvision's functional ops on PIL images (the
reference path), and the random draws are read back from the *outputs* of specially built
images and compared with the configured distributions, or with torchvision's own
``RandomErasing`` sampled as many times, with tolerances derived from the sample size.
"""

import math

import numpy as np
import pytest
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from PIL import Image
from scipy import stats

from csetgraph.data.batch_transforms import BatchAugment, erase, flip_pad_crop, grayscale

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def random_images(n, h, w, seed=0):
    """``n`` random RGB images as PIL images and as one (n, 3, h, w) uint8 batch."""
    arrays = np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    return [Image.fromarray(a) for a in arrays], torch.from_numpy(arrays).permute(0, 3, 1, 2)


def as_batch(pil_images):
    return torch.stack([torch.from_numpy(np.array(im)).permute(2, 0, 1) for im in pil_images])


def binomial_bound(p, n, z=5.0):
    """A two-sided bound on |rate - p| for n draws (z standard errors; ~1e-6 false alarms)."""
    return z * math.sqrt(max(p * (1 - p), 1e-12) / n)


# ---------------------------------------------------------------------------------------------
# each operation equals torchvision's on the same parameters


def test_grayscale_equals_pillow_luma():
    pil, batch = random_images(6, 9, 7)
    mask = torch.tensor([True, False, True, True, False, True])
    out = grayscale(batch, mask)
    ref = as_batch(
        [TF.rgb_to_grayscale(im, 3) if m else im for im, m in zip(pil, mask, strict=True)]
    )
    assert torch.equal(out, ref)


def test_flip_pad_crop_equals_torchvision_flip_pad_crop():
    pil, batch = random_images(12, 20, 10, seed=1)
    gen = torch.Generator().manual_seed(0)
    pad = 4
    top = torch.randint(0, 2 * pad + 1, (12,), generator=gen)
    left = torch.randint(0, 2 * pad + 1, (12,), generator=gen)
    flip = torch.rand(12, generator=gen) < 0.5
    out = flip_pad_crop(batch, pad, top, left, flip)
    ref = []
    for im, t, l, f in zip(pil, top.tolist(), left.tolist(), flip.tolist(), strict=True):
        im = TF.hflip(im) if f else im
        ref.append(TF.crop(TF.pad(im, pad), t, l, 20, 10))
    assert torch.equal(out, as_batch(ref))
    # without a flip mask: the crop alone
    plain = [
        TF.crop(TF.pad(im, pad), t, l, 20, 10)
        for im, t, l in zip(pil, top.tolist(), left.tolist(), strict=True)
    ]
    assert torch.equal(flip_pad_crop(batch, pad, top, left), as_batch(plain))


def test_erase_equals_torchvision_erase():
    _, batch = random_images(5, 16, 8, seed=2)
    x = batch.float()
    box = torch.tensor([[0, 0, 3, 2], [5, 1, 10, 7], [15, 7, 1, 1], [2, 2, 4, 4], [0, 0, 16, 8]])
    mask = torch.tensor([True, True, True, False, True])
    out = erase(x, mask, box)
    for b in range(5):
        i, j, h, w = box[b].tolist()
        ref = TF.erase(x[b], i, j, h, w, torch.tensor(0.0)) if mask[b] else x[b]
        assert torch.equal(out[b], ref)


EXECUTORS = ["apply_batched", "apply_per_image"]


@pytest.mark.parametrize("executor", EXECUTORS)
def test_whole_augmentation_replays_with_the_pil_path_ops(executor):
    """Every op on: the output equals torchvision's PIL ops run with the recorded draws."""
    pil, batch = random_images(16, 24, 12, seed=3)
    aug = BatchAugment(MEAN, STD, pad=3, flip_prob=0.5, erasing_prob=0.7, grayscale_prob=0.4)
    p = aug.sample(16, (24, 12), batch.device, torch.Generator().manual_seed(5))
    assert p.gray.any() and p.flip.any() and p.erase.any()  # the draws exercise each branch
    out = getattr(aug, executor)(batch, p)
    to_tensor = T.Compose([T.ToTensor(), T.Normalize(MEAN, STD)])
    for b, im in enumerate(pil):
        im = TF.rgb_to_grayscale(im, 3) if p.gray[b] else im
        im = TF.hflip(im) if p.flip[b] else im
        im = TF.crop(TF.pad(im, 3), int(p.top[b]), int(p.left[b]), 24, 12)
        ref = to_tensor(im)
        if p.erase[b]:
            i, j, h, w = p.box[b].tolist()
            ref = TF.erase(ref, i, j, h, w, torch.tensor(0.0))
        torch.testing.assert_close(out[b], ref, atol=0, rtol=0)


@pytest.mark.parametrize("pad", [0, 1, 10])
def test_the_two_executors_agree_on_many_draws(pad):
    """Per-image slices against whole-batch gathers, including crops that leave the image."""
    assert EXECUTORS
    _, batch = random_images(300, 16, 8, seed=7)
    aug = BatchAugment(MEAN, STD, pad=pad, flip_prob=0.5, erasing_prob=0.5, grayscale_prob=0.3)
    p = aug.sample(300, (16, 8), batch.device, torch.Generator().manual_seed(8))
    torch.testing.assert_close(
        aug.apply_per_image(batch, p), aug.apply_batched(batch, p), atol=0, rtol=0
    )


def test_no_augmentation_is_to_tensor_and_normalize():
    pil, batch = random_images(4, 10, 6, seed=4)
    aug = BatchAugment(MEAN, STD, pad=0, flip_prob=0, erasing_prob=0, grayscale_prob=0)
    ref = torch.stack([T.Normalize(MEAN, STD)(T.ToTensor()(im)) for im in pil])
    assert torch.equal(aug(batch, torch.Generator().manual_seed(0)), ref)


def test_same_seed_same_batch_other_seed_other_batch():
    _, batch = random_images(8, 16, 8, seed=5)
    aug = BatchAugment(MEAN, STD, pad=4, flip_prob=0.5, erasing_prob=0.5)
    a = aug(batch, torch.Generator().manual_seed(1))
    b = aug(batch, torch.Generator().manual_seed(1))
    c = aug(batch, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_rejects_float_input():
    with pytest.raises(ValueError, match="uint8"):
        BatchAugment(MEAN, STD)(torch.zeros(2, 3, 8, 4))


# ---------------------------------------------------------------------------------------------
# statistics read back from the outputs


def coordinate_images(n, h, w):
    """Images whose red channel is row + 1 and green channel is column + 1 (0 = padding)."""
    rows = torch.arange(1, h + 1, dtype=torch.uint8)[:, None].expand(h, w)
    cols = torch.arange(1, w + 1, dtype=torch.uint8)[None, :].expand(h, w)
    img = torch.stack([rows, cols, torch.full((h, w), 200, dtype=torch.uint8)])
    return img.expand(n, 3, h, w).contiguous()


def read_flip_and_offsets(out, pad, w):
    """Recover each image's flip and crop offset from the coordinates it shows."""
    raw = torch.round(out * 255).long()  # mean 0, std 1: the uint8 values come back
    flips, tops, lefts = [], [], []
    for img in raw:
        inside = (img[0] > 0).nonzero()  # pixels that came from the image, not the padding
        y, x = inside[0].tolist()
        src_row, src_col = int(img[0, y, x]) - 1, int(img[1, y, x]) - 1
        flipped = bool(img[1, y, x + 1] < img[1, y, x])  # columns run backwards
        tops.append(src_row - y + pad)
        # The crop is taken from the padded, already flipped image (the PIL order).
        mirrored_col = w - 1 - src_col if flipped else src_col
        lefts.append(mirrored_col - x + pad)
        flips.append(flipped)
    return np.array(flips), np.array(tops), np.array(lefts)


@pytest.mark.parametrize("flip_prob", [0.5, 0.2])
def test_flip_rate_and_crop_offsets_match_the_configuration(flip_prob):
    n, h, w, pad = 4000, 32, 32, 4
    aug = BatchAugment((0, 0, 0), (1, 1, 1), pad=pad, flip_prob=flip_prob, erasing_prob=0)
    out = aug(coordinate_images(n, h, w), torch.Generator().manual_seed(11))
    flips, tops, lefts = read_flip_and_offsets(out, pad, w)
    assert abs(flips.mean() - flip_prob) < binomial_bound(flip_prob, n)
    # Offsets: uniform on {0..2 pad}^2, by a chi-square test on the 81 cells.
    cells = np.bincount(tops * (2 * pad + 1) + lefts, minlength=(2 * pad + 1) ** 2)
    assert cells.size == (2 * pad + 1) ** 2  # no offset outside the range
    assert stats.chisquare(cells).pvalue > 1e-4
    assert tops.min() == 0 and tops.max() == 2 * pad and lefts.max() == 2 * pad


def test_grayscale_rate_matches_the_configuration():
    n, p = 4000, 0.3
    _, batch = random_images(n, 4, 4, seed=6)
    aug = BatchAugment((0, 0, 0), (1, 1, 1), pad=0, flip_prob=0, erasing_prob=0, grayscale_prob=p)
    out = aug(batch, torch.Generator().manual_seed(12))
    grey = (out[:, 0] == out[:, 1]).all(dim=(1, 2)) & (out[:, 1] == out[:, 2]).all(dim=(1, 2))
    # A random colour image is never grey by chance (16 pixels, 3 channels).
    assert abs(grey.float().mean().item() - p) < binomial_bound(p, n)


def erased_boxes(out):
    """(erased?, i, j, h, w) of each image, read from its zero pixels (the input has none)."""
    zero = (out == 0).all(dim=0) if out.dim() == 3 else (out == 0).all(dim=1)
    result = []
    for z in zero:
        rows, cols = z.any(dim=1).nonzero()[:, 0], z.any(dim=0).nonzero()[:, 0]
        if rows.numel() == 0:
            result.append((False, 0, 0, 0, 0))
            continue
        i, j = int(rows[0]), int(cols[0])
        h, w = int(rows[-1]) - i + 1, int(cols[-1]) - j + 1
        assert int(z.sum()) == h * w  # one solid rectangle
        result.append((True, i, j, h, w))
    return np.array(result, dtype=np.int64)


def test_random_erasing_matches_torchvision_random_erasing():
    """Rate, area, sides and position of the erased box against torchvision's own sampler."""
    n, h, w, p = 3000, 64, 32, 0.5
    images = torch.full((n, 3, h, w), 77, dtype=torch.uint8)
    aug = BatchAugment((0, 0, 0), (1, 1, 1), pad=0, flip_prob=0, erasing_prob=p)
    ours = erased_boxes(aug(images, torch.Generator().manual_seed(13)))

    torch.manual_seed(14)
    reference = T.RandomErasing(p=p, value=0)
    one = torch.full((3, h, w), 77 / 255)
    theirs = erased_boxes(torch.stack([reference(one.clone()) for _ in range(n)]))

    rate_ours, rate_theirs = ours[:, 0].mean(), theirs[:, 0].mean()
    pooled = (rate_ours + rate_theirs) / 2
    assert abs(rate_ours - rate_theirs) < binomial_bound(pooled, n) * math.sqrt(2)
    a, b = ours[ours[:, 0] == 1], theirs[theirs[:, 0] == 1]
    assert len(a) > 1000 and len(b) > 1000
    for name, col in [("top", 1), ("left", 2), ("height", 3), ("width", 4)]:
        assert stats.ks_2samp(a[:, col], b[:, col]).pvalue > 1e-4, name
    assert stats.ks_2samp(a[:, 3] * a[:, 4], b[:, 3] * b[:, 4]).pvalue > 1e-4, "area"
    # and the area fraction stays in torchvision's (0.02, 0.33) range, up to rounding
    frac = a[:, 3] * a[:, 4] / (h * w)
    assert frac.min() > 0.01 and frac.max() < 0.36
