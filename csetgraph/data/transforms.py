"""Image transforms for training and testing (torchvision)."""

from __future__ import annotations

from collections.abc import Sequence

import torchvision.transforms as T

#: ImageNet statistics, the fallback when a backbone declares none.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def build_train_transform(
    height: int,
    width: int,
    *,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    pad: int = 10,
    flip_prob: float = 0.5,
    erasing_prob: float = 0.5,
    grayscale_prob: float = 0.0,
) -> T.Compose:
    """Resize, flip, pad-and-crop, tensor, normalise, random erasing (the field's usual set).

    ``grayscale_prob`` turns a colour image grey with that probability (infrared images are
    grey already, so it only touches visible ones): a channel augmentation in the spirit of
    Ye et al.'s CAJ that leaves the visible stream the cues infrared images also have.
    """
    ops: list = [T.Resize((height, width))]
    if grayscale_prob > 0:
        ops.append(T.RandomGrayscale(p=grayscale_prob))
    if flip_prob > 0:
        ops.append(T.RandomHorizontalFlip(p=flip_prob))
    if pad > 0:
        ops += [T.Pad(pad), T.RandomCrop((height, width))]
    ops += [T.ToTensor(), T.Normalize(mean=list(mean), std=list(std))]
    if erasing_prob > 0:
        ops.append(T.RandomErasing(p=erasing_prob, value=0))
    return T.Compose(ops)


def build_test_transform(
    height: int,
    width: int,
    *,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> T.Compose:
    """Resize, tensor, normalise."""
    return T.Compose(
        [T.Resize((height, width)), T.ToTensor(), T.Normalize(mean=list(mean), std=list(std))]
    )
