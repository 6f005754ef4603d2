"""Training augmentation as batched tensor ops on the training device.

:class:`BatchAugment` takes a batch of uint8 images already resized to the training size (as the
decode-once cache stores them) and applies, per image and with independent random draws, the
operations of the PIL reference :func:`csetgraph.data.transforms.build_train_transform`, in the
same order and with the same distributions:

1. grayscale with probability ``grayscale_prob`` (Pillow's integer luma formula, so a grey image
   is bit-identical to ``PIL.Image.convert("L")``);
2. horizontal flip with probability ``flip_prob``;
3. zero-pad by ``pad`` on every side and crop back to ``H x W`` at a uniform random offset
   ``(i, j) in {0..2 pad}^2`` (``T.Pad`` + ``T.RandomCrop``);
4. ``/255`` and normalisation ``(x - mean) / std`` (``T.ToTensor`` + ``T.Normalize``);
5. random erasing with probability ``erasing_prob``: torchvision's ``RandomErasing(value=0)``
   (area fraction ``s ~ U(0.02, 0.33)``, log aspect ratio ``~ U(log 0.3, log 3.3)``, ten tries,
   the first box that fits wins, none if all ten fail).

Every draw comes from one ``torch.Generator`` on the batch's device, so a run is reproducible.
Two executors apply the draws and give the same result to the bit: whole-batch tensor ops
(:meth:`BatchAugment.apply_batched`, no host sync, used on accelerators) and slices image by
image (:meth:`BatchAugment.apply_per_image`, used on the CPU, where it is 2-3x faster).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

# Pillow's ITU-R 601-2 luma in 16-bit fixed point (libImaging/Convert.c, L24): the weights sum
# to 2**16, so a grey pixel maps to itself exactly.
_LUMA = (19595, 38470, 7471)
_ERASE_TRIES = 10


@dataclass
class AugmentParams:
    """The random draws of one batch (kept so tests can replay them with torchvision).

    Attributes:
        gray: ``(B,)`` bool, image turned grey.
        flip: ``(B,)`` bool, image mirrored.
        top, left: ``(B,)`` long, crop offset into the padded image, in ``[0, 2 pad]``.
        erase: ``(B,)`` bool, a box was erased.
        box: ``(B, 4)`` long, the erased box ``(i, j, h, w)`` (meaningless where not ``erase``).
    """

    gray: Tensor
    flip: Tensor
    top: Tensor
    left: Tensor
    erase: Tensor
    box: Tensor


class BatchAugment:
    r"""Batched pad-and-crop, flip, random erasing, grayscale and normalisation.

    .. math::
        y_b = E_b\Big(\frac{C_{t_b, l_b}\big(F_b(G_b(x_b))\big) / 255 - \mu}{\sigma}\Big)

    with :math:`G_b` grayscale, :math:`F_b` flip, :math:`C` the crop of the zero-padded image
    and :math:`E_b` erasing, each switched on per image with its probability.

    Args:
        mean, std: per-channel normalisation statistics.
        pad: zero padding before the random crop (0: no crop).
        flip_prob, erasing_prob, grayscale_prob: per-image probabilities.
        erasing_scale, erasing_ratio: torchvision's ``RandomErasing`` ranges.

    Shapes:
        input: ``(B, 3, H, W)`` uint8 on any device.
        output: ``(B, 3, H, W)`` float32 on the same device.
    """

    def __init__(
        self,
        mean: Sequence[float],
        std: Sequence[float],
        *,
        pad: int = 10,
        flip_prob: float = 0.5,
        erasing_prob: float = 0.5,
        grayscale_prob: float = 0.0,
        erasing_scale: tuple[float, float] = (0.02, 0.33),
        erasing_ratio: tuple[float, float] = (0.3, 3.3),
    ) -> None:
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.pad = int(pad)
        self.flip_prob = float(flip_prob)
        self.erasing_prob = float(erasing_prob)
        self.grayscale_prob = float(grayscale_prob)
        self.erasing_scale = erasing_scale
        self.erasing_ratio = erasing_ratio
        self._stats: dict[torch.device, tuple[Tensor, Tensor]] = {}

    def __call__(
        self, images: Tensor, generator: torch.Generator | None = None, out: Tensor | None = None
    ) -> Tensor:
        result, _ = self.forward(images, generator, out)
        return result

    def forward(
        self,
        images: Tensor,
        generator: torch.Generator | None = None,
        out: Tensor | None = None,
    ) -> tuple[Tensor, AugmentParams]:
        """Augment a uint8 batch; return the float batch and the draws that made it.

        ``out``: where the CPU executor writes (e.g. a shared-memory tensor in a worker).
        """
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected (B, 3, H, W) uint8 images, got {tuple(images.shape)}")
        params = self.sample(images.shape[0], images.shape[-2:], images.device, generator)
        if images.device.type == "cpu":
            return self.apply_per_image(images, params, out), params
        return self.apply_batched(images, params), params

    def apply_batched(self, images: Tensor, params: AugmentParams) -> Tensor:
        """The augmentation as whole-batch tensor ops: no host sync, for accelerators."""
        # An operation switched off in the config is skipped, not run with an all-false mask;
        # the draws are made either way, so the random stream does not depend on it.
        x = grayscale(images, params.gray) if self.grayscale_prob > 0 else images
        flip = params.flip if self.flip_prob > 0 else None
        x = flip_pad_crop(x, self.pad, params.top, params.left, flip)
        mean, std = self._device_stats(images.device)
        x = x.float().div_(255).sub_(mean).div_(std)  # the op order of ToTensor + Normalize
        if self.erasing_prob > 0:
            # Erasing to 0 as an in-place multiply: several times faster than masked_fill on
            # a CPU (a negative value comes out as -0.0, which equals 0.0).
            x.mul_(~box_mask(x.shape[-2:], params.erase, params.box)[:, None])
        return x

    def apply_per_image(
        self, images: Tensor, params: AugmentParams, out: Tensor | None = None
    ) -> Tensor:
        """The same result, image by image on slices: 2-3x faster on a CPU, where each image's
        float copy stays in cache between the steps, while the batched ops stream the whole
        batch through memory once per step. Needs the draws on the host (a sync elsewhere)."""
        b, c, h, w = images.shape
        mean, std = self._device_stats(images.device)
        # The padding: a 0 pixel normalised with the same ops as the image pixels.
        pad_value = torch.zeros(c, 1, 1, device=images.device).div_(255).sub_(mean).div_(std)
        if out is None:
            out = torch.empty(b, c, h, w, device=images.device)
        out.copy_(pad_value.expand(b, c, h, w))  # (B, C, H, W), all padding
        gray, flip, top, left = (
            t.tolist() for t in (params.gray, params.flip, params.top, params.left)
        )
        erase_on, box = params.erase.tolist(), params.box.tolist()
        for k in range(b):
            src = luma(images[k]) if gray[k] else images[k]
            src = src.flip(-1) if flip[k] else src
            dy, dx = top[k] - self.pad, left[k] - self.pad  # source pixel = output pixel + (dy, dx)
            # The rows/columns of the output that see the image (none if the crop misses it;
            # clamped, since a negative slice end would count from the other side).
            r0, c0 = min(h, max(0, -dy)), min(w, max(0, -dx))
            r1, c1 = max(r0, min(h, h - dy)), max(c0, min(w, w - dx))
            region = out[k, :, r0:r1, c0:c1]
            region.copy_(src[:, r0 + dy : r1 + dy, c0 + dx : c1 + dx])
            region.div_(255).sub_(mean).div_(std)
            if erase_on[k]:
                i, j, bh, bw = box[k]
                out[k, :, i : i + bh, j : j + bw] = 0.0
        return out

    def sample(
        self,
        batch: int,
        size: Sequence[int],
        device: torch.device,
        generator: torch.Generator | None = None,
    ) -> AugmentParams:
        """Draw every image's switches, crop offset and erasing box."""

        def coin(p: float) -> Tensor:
            return torch.rand(batch, generator=generator, device=device) < p

        gray, flip = coin(self.grayscale_prob), coin(self.flip_prob)
        offsets = torch.randint(
            0, 2 * self.pad + 1, (2, batch), generator=generator, device=device
        )  # (2, B)
        erase_on, box = self._sample_erasing(batch, size, device, generator)
        return AugmentParams(gray, flip, offsets[0], offsets[1], erase_on, box)

    def _sample_erasing(self, batch, size, device, generator) -> tuple[Tensor, Tensor]:
        """torchvision's ``RandomErasing.get_params`` for B images at once (ten tries each)."""
        h_img, w_img = int(size[0]), int(size[1])
        on = torch.rand(batch, generator=generator, device=device) < self.erasing_prob
        u = torch.rand(
            2, batch, _ERASE_TRIES, generator=generator, device=device, dtype=torch.float64
        )  # (2, B, T): area fraction and log aspect ratio of each try
        lo, hi = self.erasing_scale
        area = h_img * w_img * (lo + (hi - lo) * u[0])  # (B, T)
        log_lo, log_hi = math.log(self.erasing_ratio[0]), math.log(self.erasing_ratio[1])
        aspect = torch.exp(log_lo + (log_hi - log_lo) * u[1])
        h = torch.round(torch.sqrt(area * aspect)).long()  # round half to even, like Python's
        w = torch.round(torch.sqrt(area / aspect)).long()
        fits = (h < h_img) & (w < w_img)  # (B, T)
        first = torch.argmax(fits.int(), dim=1)  # the first try that fits (0 if none does)
        found = fits.any(dim=1)
        h = h.gather(1, first[:, None])[:, 0]
        w = w.gather(1, first[:, None])[:, 0]
        pos = torch.rand(2, batch, generator=generator, device=device, dtype=torch.float64)
        i = torch.minimum((pos[0] * (h_img - h + 1)).long(), h_img - h)  # randint(0, H - h + 1)
        j = torch.minimum((pos[1] * (w_img - w + 1)).long(), w_img - w)
        box = torch.stack([i, j, h, w], dim=1)  # (B, 4)
        return on & found, box

    def _device_stats(self, device: torch.device) -> tuple[Tensor, Tensor]:
        if device not in self._stats:  # made once per device: no host copy in the step
            mean = torch.tensor(self.mean, dtype=torch.float32, device=device)[:, None, None]
            std = torch.tensor(self.std, dtype=torch.float32, device=device)[:, None, None]
            self._stats[device] = (mean, std)
        return self._stats[device]

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(pad={self.pad}, flip_prob={self.flip_prob}, "
            f"erasing_prob={self.erasing_prob}, grayscale_prob={self.grayscale_prob})"
        )


def luma(images: Tensor) -> Tensor:
    """Pillow's fixed-point luma of uint8 RGB, repeated on 3 channels.

    Shapes:
        images: ``(..., 3, H, W)`` uint8; output: the same.
    """
    r, g, b = images.int().unbind(-3)  # (..., H, W) each
    grey = ((r * _LUMA[0] + g * _LUMA[1] + b * _LUMA[2] + 0x8000) >> 16).to(torch.uint8)
    return grey.unsqueeze(-3).expand_as(images)


def grayscale(images: Tensor, mask: Tensor) -> Tensor:
    """Turn the masked uint8 images grey with Pillow's fixed-point luma (3 equal channels).

    Shapes:
        images: ``(B, 3, H, W)`` uint8; mask: ``(B,)`` bool.
    """
    return torch.where(mask[:, None, None, None], luma(images), images)


def flip_pad_crop(
    images: Tensor, pad: int, top: Tensor, left: Tensor, flip: Tensor | None = None
) -> Tensor:
    """Mirror the ``flip`` images, zero-pad by ``pad`` and crop ``H x W`` at ``(top, left)``.

    The PIL order (flip, then pad and crop), as one gather: the windows of the padded batch and
    of its mirror are strided views (``unfold``), and each image picks its window. (On a CPU
    this is several times faster than a ``torch.where`` for the flip plus a crop by indices.)

    Shapes:
        images: ``(B, C, H, W)``; top, left: ``(B,)`` long in ``[0, 2 pad]``; flip: ``(B,)``.
        output: ``(B, C, H, W)``.
    """
    b, _, h, w = images.shape
    padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))  # (B, C, H+2p, W+2p)
    if flip is None:
        windows = padded.unfold(2, h, 1).unfold(3, w, 1)  # (B, C, 2p+1, 2p+1, H, W), a view
        return windows[torch.arange(b, device=images.device), :, top, left]
    # Padding is symmetric, so the mirror of the padded image is the padded mirror.
    both = torch.stack([padded, padded.flip(-1)])  # (2, B, C, H+2p, W+2p)
    windows = both.unfold(3, h, 1).unfold(4, w, 1)  # (2, B, C, 2p+1, 2p+1, H, W), a view
    # Advanced indices split by the channel slice come first: (B, C, H, W).
    return windows[flip.long(), torch.arange(b, device=images.device), :, top, left]


def box_mask(size: Sequence[int], mask: Tensor, box: Tensor) -> Tensor:
    """True inside the box ``(i, j, h, w)`` of each masked image.

    Shapes:
        mask: ``(B,)`` bool; box: ``(B, 4)`` long; output: ``(B, H, W)`` bool.
    """
    h, w = int(size[0]), int(size[1])
    i, j, bh, bw = box.unbind(1)  # (B,) each
    ys = torch.arange(h, device=box.device)[None, :]  # (1, H)
    xs = torch.arange(w, device=box.device)[None, :]
    in_rows = (ys >= i[:, None]) & (ys < (i + bh)[:, None]) & mask[:, None]  # (B, H)
    in_cols = (xs >= j[:, None]) & (xs < (j + bw)[:, None])  # (B, W)
    return in_rows[:, :, None] & in_cols[:, None, :]


def erase(images: Tensor, mask: Tensor, box: Tensor, value: float = 0.0) -> Tensor:
    """Set the box ``(i, j, h, w)`` of each masked image to ``value``.

    Shapes:
        images: ``(B, C, H, W)`` float; mask: ``(B,)`` bool; box: ``(B, 4)`` long.
    """
    inside = box_mask(images.shape[-2:], mask, box)[:, None]  # (B, 1, H, W)
    return images.masked_fill(inside, value)


__all__ = [
    "AugmentParams",
    "BatchAugment",
    "box_mask",
    "erase",
    "flip_pad_crop",
    "grayscale",
    "luma",
]
