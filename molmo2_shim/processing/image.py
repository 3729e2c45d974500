"""Molmo2 image preprocessing: tiling, crops, patches and pooling indices.

Produces exactly the tensors of the original image processor (bit-identical pixels, same
integer indices) with whole-tensor operations instead of per-crop numpy copies:

* the image is resized twice on uint8 (the whole image to one 378x378 "low-res" crop, and to a
  canvas of th x tw overlapping 378x378 windows), with torchvision's bilinear kernel without
  antialiasing, exactly as the original;
* all crops are cut and patchified from one strided view of the canvas, converted to float32
  in that same copy;
* normalisation runs in place with the original's float32 operations in the original's order
  (so bits are identical).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from ..errors import Molmo2InputError

# PIL's resample constants, as written in preprocessor_config.json.
_RESAMPLE = {0: InterpolationMode.NEAREST, 2: InterpolationMode.BILINEAR, 3: InterpolationMode.BICUBIC}
_MAX_PIXELS = 178_956_970  # PIL's own decompression-bomb limit (2x its warning threshold)


@dataclass(frozen=True)
class ImageProcessingConfig:
    """What preprocessor_config.json says; defaults are the released checkpoints' values."""

    crop_size: int = 378
    patch_size: int = 14
    max_crops: int = 8
    overlap_margins: tuple[int, int] = (4, 4)
    pooling_size: tuple[int, int] = (2, 2)
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    resample: int = 2
    do_convert_rgb: bool = True

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ImageProcessingConfig:
        size = d.get("size") or {}
        crop = size.get("height", cls.crop_size)
        if size.get("width", crop) != crop:
            raise ValueError(f"Molmo2 crops are square; preprocessor size {size} is not")
        return cls(
            crop_size=int(crop),
            patch_size=int(d.get("patch_size", cls.patch_size)),
            max_crops=int(d.get("max_crops", cls.max_crops)),
            overlap_margins=tuple(d.get("overlap_margins", cls.overlap_margins)),
            pooling_size=tuple(d.get("pooling_size", cls.pooling_size)),
            image_mean=tuple(_triple(d.get("image_mean", cls.image_mean))),
            image_std=tuple(_triple(d.get("image_std", cls.image_std))),
            resample=int(d.get("resample", cls.resample)),
            do_convert_rgb=bool(d.get("do_convert_rgb", cls.do_convert_rgb)),
        )

    @property
    def size(self) -> dict[str, int]:
        """The hub image processor's attribute (vLLM's native Molmo2 reads it)."""
        return {"height": self.crop_size, "width": self.crop_size}

    @property
    def crop_patches(self) -> int:
        return self.crop_size // self.patch_size

    @property
    def patches_per_crop(self) -> int:
        return self.crop_patches * self.crop_patches

    @property
    def window_patches(self) -> int:
        return self.crop_patches - sum(self.overlap_margins)

    @property
    def window_size(self) -> int:
        return self.window_patches * self.patch_size

    @property
    def margin_pixels(self) -> int:
        return sum(self.overlap_margins) * self.patch_size


@dataclass
class ProcessedImage:
    pixel_values: torch.Tensor  # [n_crops, patches_per_crop, patch*patch*3] float32, crop 0 = low-res
    token_pooling: torch.Tensor  # [n_pooled, pool_h*pool_w] int64, local to this image, -1 = pad
    grid: tuple[int, int, int, int]  # (low-res rows, low-res cols, high-res rows, high-res cols)

    @property
    def num_crops(self) -> int:
        return int(self.pixel_values.shape[0])


def _triple(v: Any) -> list[float]:
    return [float(v)] * 3 if isinstance(v, (int, float)) else [float(x) for x in v]


def select_tiling(height: int, width: int, window: int, max_crops: int) -> tuple[int, int]:
    """(rows, cols) of crops for an image whose usable size is height x width.

    Candidates are ordered by crop count then rows, so ties go to the smaller tiling. When
    every candidate needs downscaling, the one that downscales least wins; otherwise the one
    that upscales least. Scales are float32, as in the original, so ties break the same way.
    """
    cands = np.array(_tilings(max_crops), dtype=np.int32)
    size = np.array([height, width], dtype=np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = ((cands * window).astype(np.float32) / size).min(axis=-1)
    if np.all(scale < 1):
        ix = int(np.argmax(scale))
    else:
        ix = int(np.argmin(np.where(scale < 1.0, np.float32(1e10), scale)))
    return int(cands[ix, 0]), int(cands[ix, 1])


@functools.lru_cache(maxsize=16)
def _tilings(max_crops: int) -> tuple[tuple[int, int], ...]:
    out = [(i, j) for i in range(1, max_crops + 1) for j in range(1, max_crops + 1) if i * j <= max_crops]
    return tuple(sorted(out, key=lambda t: (t[0] * t[1], t[0])))


def to_uint8_hwc(image: Any, do_convert_rgb: bool = True) -> torch.Tensor:
    """Accept what the original accepts (PIL, HxWxC / HxW arrays, uint8 or float in [0, 1]).

    Returns an HxWx3 uint8 tensor, or an HxWx3 float32 tensor for float input (the original
    resizes float images in float and clips to [0, 1]).
    """
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow ships with vLLM and transformers
        Image = None
    if Image is not None and isinstance(image, Image.Image):
        w, h = image.size
        if w * h > _MAX_PIXELS:
            raise Molmo2InputError(
                f"image of {w}x{h} pixels exceeds the decompression-bomb limit of {_MAX_PIXELS} pixels"
            )
        try:
            # No EXIF transpose: the original does not apply one (nor does vLLM's loader).
            if do_convert_rgb and image.mode != "RGB":
                image = image.convert("RGB")
            array = np.asarray(image)
        except (OSError, SyntaxError, ValueError) as exc:  # what PIL raises for undecodable data
            raise Molmo2InputError(f"the image cannot be decoded: {exc}") from exc
    elif isinstance(image, torch.Tensor):
        array = image.detach().cpu().numpy()
        if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
            array = np.transpose(array, (1, 2, 0))
    elif isinstance(image, np.ndarray):
        array = image
    else:
        raise Molmo2InputError(f"unsupported image type {type(image).__name__}; pass a PIL image or an HxWx3 array")
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
        raise Molmo2InputError(f"image array must be HxW or HxWxC with C in (1, 3, 4), got shape {array.shape}")
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=2)
    elif array.shape[-1] == 4:
        array = array[..., :3]
    h, w = array.shape[:2]
    if h == 0 or w == 0:
        raise Molmo2InputError(f"image has zero size ({w}x{h}); Molmo2 needs at least 1x1 pixels")
    if h * w > _MAX_PIXELS:
        raise Molmo2InputError(f"image of {w}x{h} pixels exceeds the decompression-bomb limit of {_MAX_PIXELS} pixels")
    if not array.flags.writeable:
        array = array.copy()
    if array.dtype == np.uint8:
        return torch.from_numpy(np.ascontiguousarray(array))
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise Molmo2InputError("float image contains NaN or inf values")
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    raise Molmo2InputError(f"image dtype {array.dtype} is not supported; use uint8 or float in [0, 1]")


def _resize(hwc: torch.Tensor, height: int, width: int, mode: InterpolationMode) -> torch.Tensor:
    chw = hwc.permute(2, 0, 1)
    out = TF.resize(chw, [height, width], interpolation=mode, antialias=False)
    if hwc.dtype == torch.uint8:
        return out.permute(1, 2, 0)  # torchvision rounds uint8 results back into range itself
    return out.clamp(0.0, 1.0).permute(1, 2, 0)


def _patch_view(canvas: torch.Tensor, rows: int, cols: int, cfg: ImageProcessingConfig) -> torch.Tensor:
    """rows x cols crops at stride `window_size`, as patches, without copying.

    Shape [rows, cols, n, n, patch, patch, 3] (n = patches per crop side) viewed in the
    original's element order: crops row-major, patches row-major, inside a patch (py, px,
    channel). Flattening it would copy; callers copy it once into a buffer of that shape.
    """
    canvas = canvas.contiguous()
    sh, sw, sc = canvas.stride()
    p, n, step = cfg.patch_size, cfg.crop_patches, cfg.window_size
    return canvas.as_strided(
        size=(rows, cols, n, n, p, p, 3),
        stride=(step * sh, step * sw, p * sh, p * sw, sh, sw, sc),
    )


def _patchify(canvases: list[tuple[torch.Tensor, int, int]], cfg: ImageProcessingConfig) -> torch.Tensor:
    """All crops of several canvases as float32 [crops, patches_per_crop, patch*patch*3].

    One output buffer, filled straight from the strided crop views in a single copy (fresh
    multi-megabyte buffers cost page faults).
    """
    total = sum(r * c for _, r, c in canvases)
    p = cfg.patch_size
    n = cfg.crop_patches
    out = torch.empty((total, cfg.patches_per_crop, p, p, 3), dtype=torch.float32)
    at = 0
    for canvas, rows, cols in canvases:
        out[at:at + rows * cols].view(rows, cols, n, n, p, p, 3).copy_(_patch_view(canvas, rows, cols, cfg))
        at += rows * cols
    return out.view(total, cfg.patches_per_crop, p * p * 3)


def _normalize_(x: torch.Tensor, from_uint8: bool, cfg: ImageProcessingConfig) -> torch.Tensor:
    """Normalise float32 pixels in place with the original's float32 operations, in their
    order (so bits are identical): scale uint8 values by 1/255 with a division, subtract the
    mean, divide by the std."""
    if from_uint8:
        x.div_(255.0)
    if len(set(cfg.image_mean)) == 1 and len(set(cfg.image_std)) == 1:
        # Same per channel (the released checkpoints): scalar operands give the same float32
        # results without a 3-wide broadcast, which is several times slower on CPU.
        return x.sub_(cfg.image_mean[0]).div_(cfg.image_std[0])
    channels = x.view(-1, 3)
    channels.sub_(torch.tensor(cfg.image_mean, dtype=torch.float32))
    channels.div_(torch.tensor(cfg.image_std, dtype=torch.float32))
    return x


def pool_windows(index_grid: torch.Tensor, pool_h: int, pool_w: int) -> torch.Tensor:
    """Group a 2-D grid of patch indices into pool_h x pool_w windows, padding with -1.

    Odd sizes are padded half before (rounded down) and half after, as the original does.
    Returns [rows*cols, pool_h*pool_w] with each window in row-major order.
    """
    h, w = index_grid.shape
    ph = pool_h * math.ceil(h / pool_h) - h
    pw = pool_w * math.ceil(w / pool_w) - w
    padded = F.pad(index_grid, (pw // 2, (pw + 1) // 2, ph // 2, (ph + 1) // 2), value=-1)
    rows, cols = padded.shape[0] // pool_h, padded.shape[1] // pool_w
    return padded.reshape(rows, pool_h, cols, pool_w).permute(0, 2, 1, 3).reshape(rows * cols, pool_h * pool_w)


@functools.lru_cache(maxsize=128)
def _high_res_index_grid(rows: int, cols: int, n: int, left: int, right: int) -> torch.Tensor:
    """For every patch of the canvas, which crop patch it is read from (crop-major index).

    Neighbouring crops overlap by the margins; each canvas patch belongs to the crop whose
    kept (non-margin) region covers it.
    """
    step = n - left - right

    def axis(tiles: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.arange(tiles * step + left + right)
        tile = ((g - left).div(step, rounding_mode="floor")).clamp(0, tiles - 1)
        return tile, g - tile * step

    ty, ly = axis(rows)
    tx, lx = axis(cols)
    crop = ty[:, None] * cols + tx[None, :]
    return crop * (n * n) + ly[:, None] * n + lx[None, :]


@functools.lru_cache(maxsize=128)
def pooling_layout(rows: int, cols: int, cfg: ImageProcessingConfig) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    """Pooling indices for an image tiled rows x cols, and its grid; depends on the tiling only."""
    n = cfg.crop_patches
    pool_h, pool_w = cfg.pooling_size
    high = _high_res_index_grid(rows, cols, n, *cfg.overlap_margins)
    high_pool = pool_windows(high, pool_h, pool_w)
    high_pool = torch.where(high_pool >= 0, high_pool + cfg.patches_per_crop, high_pool)
    low_pool = pool_windows(torch.arange(n * n).reshape(n, n), pool_h, pool_w)
    hr = math.ceil(high.shape[0] / pool_h)
    hc = math.ceil(high.shape[1] / pool_w)
    lr = math.ceil(n / pool_h)
    lc = math.ceil(n / pool_w)
    return torch.cat([low_pool, high_pool]).to(torch.int64), (lr, lc, hr, hc)


def image_tiling(height: int, width: int, cfg: ImageProcessingConfig) -> tuple[int, int]:
    return select_tiling(height - cfg.margin_pixels, width - cfg.margin_pixels, cfg.window_size, cfg.max_crops)


def image_grid_for_size(height: int, width: int, cfg: ImageProcessingConfig) -> tuple[int, int, int, int]:
    """The pooled grid of an image of this size, without touching pixels."""
    return pooling_layout(*image_tiling(height, width, cfg), cfg)[1]


def preprocess_image(image: Any, cfg: ImageProcessingConfig) -> ProcessedImage:
    hwc = to_uint8_hwc(image, cfg.do_convert_rgb)
    mode = _RESAMPLE.get(cfg.resample)
    if mode is None:
        raise ValueError(f"unsupported resample mode {cfg.resample} in preprocessor_config.json")
    height, width = int(hwc.shape[0]), int(hwc.shape[1])
    rows, cols = image_tiling(height, width, cfg)
    canvas = _resize(hwc, rows * cfg.window_size + cfg.margin_pixels, cols * cfg.window_size + cfg.margin_pixels, mode)
    low_res = _resize(hwc, cfg.crop_size, cfg.crop_size, mode)
    pixels = _normalize_(_patchify([(low_res, 1, 1), (canvas, rows, cols)], cfg), hwc.dtype == torch.uint8, cfg)
    pooling, grid = pooling_layout(rows, cols, cfg)
    return ProcessedImage(pixel_values=pixels, token_pooling=pooling.clone(), grid=grid)


def size_with_most_tokens(cfg: ImageProcessingConfig, count_tokens: Any) -> tuple[int, int, int]:
    """(height, width, tokens) of the image size with the most tokens, over every tiling.

    `count_tokens(grid)` counts the tokens of a pooled grid (layout flags decide col tokens).
    An image exactly the size of a tiling's canvas selects that tiling (its scale is 1).
    """
    best = (0, 0, -1)
    for rows, cols in _tilings(cfg.max_crops):
        h = rows * cfg.window_size + cfg.margin_pixels
        w = cols * cfg.window_size + cfg.margin_pixels
        n = count_tokens(image_grid_for_size(h, w, cfg))
        if n > best[2]:
            best = (h, w, n)
    return best
