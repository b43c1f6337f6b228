"""MoCo v2 views made batch-wise on the training device, each sample with its own parameters.

The geometric part (random resized crop, flip) runs per image where the image is read (a
DataLoader worker): it fixes the batch's common size. The photometric part (colour jitter,
grayscale, Gaussian blur; MoCo v2, Chen et al. 2020, Sec. 3) is a handful of tensor ops on
the whole batch on the device, with every sample's parameters drawn beside its crop, so a
batch is still a pure function of the iteration.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.transforms import v2 as T

# MoCo v2's probabilities and ranges (torchvision's ColorJitter(0.4, 0.4, 0.4, 0.1))
JITTER_P, GRAY_P, BLUR_P = 0.8, 0.2, 0.5
JITTER, HUE, SIGMA = 0.4, 0.1, (0.1, 2.0)
_LUMA = (0.2989, 0.587, 0.114)  # as torchvision rgb_to_grayscale


def crop_views(images: list[torch.Tensor], size: int, scale, generator: torch.Generator
               ) -> torch.Tensor:
    """(3, H, W) uint8 images -> (B, 3, size, size) uint8: a random resized crop and a coin-flip
    horizontal flip per image."""
    out = []
    for img in images:
        # torchvision's crop sampler reads the global RNG: seed it from our generator
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(2**62, (1,), generator=generator)))
            top, left, h, w = T.RandomResizedCrop.get_params(img, list(scale), [3 / 4, 4 / 3])
        v = T.functional.resized_crop(img, top, left, h, w, [size, size], antialias=True)
        if torch.rand((), generator=generator) < 0.5:
            v = v.flip(-1)
        out.append(v)
    return torch.stack(out)


def photometric_params(batch: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Per-sample parameters; an op a sample does not get has its identity value."""
    def u(lo, hi):
        return lo + (hi - lo) * torch.rand(batch, generator=generator)

    jitter = torch.rand(batch, generator=generator) < JITTER_P
    return {
        "brightness": torch.where(jitter, u(1 - JITTER, 1 + JITTER), 1.0),
        "contrast": torch.where(jitter, u(1 - JITTER, 1 + JITTER), 1.0),
        "saturation": torch.where(jitter, u(1 - JITTER, 1 + JITTER), 1.0),
        "hue": torch.where(jitter, u(-HUE, HUE), 0.0),
        "order": torch.randperm(4, generator=generator),  # one jitter order per batch
        "gray": torch.rand(batch, generator=generator) < GRAY_P,
        "sigma": torch.where(torch.rand(batch, generator=generator) < BLUR_P,
                             u(*SIGMA), 0.0),           # 0: no blur
    }


def _gray(x: torch.Tensor) -> torch.Tensor:
    w = x.new_tensor(_LUMA).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def _blend(x: torch.Tensor, other: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    f = f.view(-1, 1, 1, 1)
    return (f * x + (1 - f) * other).clamp(0, 1)


def _shift_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """RGB -> HSV, hue + shift (in turns), -> RGB; per sample."""
    r, g, b = x.unbind(1)
    mx, _ = x.max(1)
    mn, _ = x.min(1)
    delta = mx - mn
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    h = torch.where(mx == r, ((g - b) / safe) % 6,
                    torch.where(mx == g, (b - r) / safe + 2, (r - g) / safe + 4)) / 6
    h = torch.where(delta > 0, h, torch.zeros_like(h))
    h = (h + shift.view(-1, 1, 1)) % 1.0
    s = torch.where(mx > 0, delta / torch.where(mx > 0, mx, torch.ones_like(mx)),
                    torch.zeros_like(mx))
    # HSV -> RGB through the standard k = (n + 6h) mod 6 form
    k = (torch.tensor([5.0, 3.0, 1.0], device=x.device).view(1, 3, 1, 1) + 6 * h[:, None]) % 6
    return mx[:, None] - (mx * s)[:, None] * torch.clamp(torch.minimum(k, 4 - k), 0, 1)


def _blur(x: torch.Tensor, sigma: torch.Tensor, kernel: int) -> torch.Tensor:
    """Separable Gaussian blur with one sigma per sample (0: unchanged), reflect padding."""
    b, c, h, w = x.shape
    half = kernel // 2
    t = torch.arange(kernel, device=x.device, dtype=x.dtype) - half
    s = sigma.to(x).clamp_min(1e-3).view(-1, 1)
    k = torch.exp(-0.5 * (t / s) ** 2)
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(c, 0)          # (b*c, kernel)
    y = F.pad(x.reshape(1, b * c, h, w), (half, half, half, half), mode="reflect")
    y = F.conv2d(y, k.view(b * c, 1, 1, kernel), groups=b * c)
    y = F.conv2d(y, k.view(b * c, 1, kernel, 1), groups=b * c).view(b, c, h, w)
    return torch.where((sigma > 0).to(x.device).view(-1, 1, 1, 1), y, x)


def photometric(x: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    """(B, 3, H, W) float in [0, 1] -> jittered, grayscaled and blurred, per sample."""
    p = {k: v.to(x.device) for k, v in p.items()}
    for op in p["order"].tolist():
        if op == 0:
            x = (x * p["brightness"].view(-1, 1, 1, 1)).clamp(0, 1)
        elif op == 1:
            x = _blend(x, _gray(x).mean((2, 3), keepdim=True), p["contrast"])
        elif op == 2:
            x = _blend(x, _gray(x), p["saturation"])
        else:
            x = torch.where((p["hue"] != 0).view(-1, 1, 1, 1), _shift_hue(x, p["hue"]), x)
    x = torch.where(p["gray"].view(-1, 1, 1, 1), _gray(x).expand_as(x), x)
    if bool((p["sigma"] > 0).any()):
        x = _blur(x, p["sigma"], kernel=max(3, x.shape[-1] // 10 * 2 + 1))
    return x
