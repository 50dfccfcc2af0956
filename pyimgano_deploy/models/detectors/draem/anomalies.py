"""DRAEM's simulated anomalies: Perlin-noise masks filled with a texture (all torch, seeded)."""

from __future__ import annotations

import math

import torch


def _fade(t: torch.Tensor) -> torch.Tensor:
    return t * t * t * (t * (t * 6.0 - 15.0) + 10.0)


def perlin_noise(h: int, w: int, res: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
    """2-D Perlin noise ``[h, w]`` (values about −1..1) with ``res`` lattice cells per axis."""
    ry, rx = res
    angles = 2.0 * math.pi * torch.rand(ry + 1, rx + 1, generator=generator)
    grads = torch.stack([torch.cos(angles), torch.sin(angles)], dim=-1)  # [ry+1, rx+1, 2]
    ys = torch.arange(h, dtype=torch.float32) * ry / h
    xs = torch.arange(w, dtype=torch.float32) * rx / w
    yi, xi = ys.floor().long(), xs.floor().long()
    fy, fx = (ys - yi)[:, None], (xs - xi)[None, :]

    def corner(dy: int, dx: int) -> torch.Tensor:
        g = grads[yi + dy][:, xi + dx]  # [h, w, 2]
        return g[..., 0] * (fy - dy) + g[..., 1] * (fx - dx)

    u, v = _fade(fx), _fade(fy)
    top = corner(0, 0) * (1 - u) + corner(0, 1) * u
    bottom = corner(1, 0) * (1 - u) + corner(1, 1) * u
    return math.sqrt(2.0) * (top * (1 - v) + bottom * v)


def perlin_mask(h: int, w: int, generator: torch.Generator, threshold: float = 0.5) -> torch.Tensor:
    """A binary anomaly mask ``[h, w]`` float32: Perlin noise of random scale (2^0..2^5 cells
    per axis, as in the paper) above ``threshold``."""
    sy, sx = (2 ** int(v) for v in torch.randint(0, 6, (2,), generator=generator))
    return (perlin_noise(h, w, (sy, sx), generator) > threshold).to(torch.float32)


def augment(texture: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random flips, 90° rotation (square images), brightness and contrast of ``[3, H, W]`` in [0, 1]."""
    if torch.rand((), generator=generator) < 0.5:
        texture = texture.flip(2)
    if torch.rand((), generator=generator) < 0.5:
        texture = texture.flip(1)
    if texture.shape[1] == texture.shape[2] and torch.rand((), generator=generator) < 0.5:
        texture = texture.rot90(1, dims=(1, 2))
    gain = 0.6 + 0.8 * torch.rand((), generator=generator)
    bias = 0.3 * (torch.rand((), generator=generator) - 0.5)
    mean = texture.mean()
    return ((texture - mean) * gain + mean + bias).clamp(0.0, 1.0)


def simulate(images: torch.Tensor, textures: torch.Tensor, generator: torch.Generator, p_anomaly: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """DRAEM's training pair: images ``[B, 3, H, W]`` in [0, 1] → (augmented images, masks ``[B, 1, H, W]``).

    With probability ``p_anomaly`` an image gets ``I(1 − M) + (1 − β)·T·M + β·I·M`` with a Perlin
    mask M, β ~ U(0, 0.8) and a texture T drawn from ``textures`` ``[T, 3, H, W]`` (augmented)."""
    b, _, h, w = images.shape
    out, masks = images.clone(), torch.zeros(b, 1, h, w, dtype=images.dtype, device=images.device)
    for i in range(b):
        if torch.rand((), generator=generator) >= p_anomaly:
            continue
        mask = perlin_mask(h, w, generator).to(images.device, images.dtype)
        texture = augment(textures[int(torch.randint(0, textures.shape[0], (), generator=generator))], generator).to(images.device)
        beta = 0.8 * torch.rand((), generator=generator).item()
        out[i] = images[i] * (1 - mask) + (1 - beta) * texture * mask + beta * images[i] * mask
        masks[i, 0] = mask
    return out, masks
