"""Molmo2 image preprocessing: tiling, crops, patches and pooling indices.

Produces exactly the tensors of the original image processor (bit-identical pixels, same
integer indices) with whole-tensor operations instead of per-crop numpy copies. For uint8
images (PIL images, uint8 arrays) with the checkpoints' bilinear resampling:

* the image is converted once to planar float32 and resized twice with torch's bilinear
  kernel (the whole image to one 378x378 "low-res" crop, and to a canvas of th x tw
  overlapping 378x378 windows), selecting the same kernel the original's torchvision call
  gets (see `_resize_hwc`): torch's result depends on its thread count, ours must not;
* the resized planes are rounded (the original's uint8 round trip: every value already lies
  in [0, 255]), scaled by 1/255 and have the mean subtracted in place, with the original's
  float32 operations in its order;
* the last operation, the division by the std, writes straight into the crops' patch layout
  from one strided view of the canvas, so no crop is copied separately.

Everything that depends only on the image size (tiling, pooling indices, grids) is cached.
The processor's torch work runs on at most MOLMO2_SHIM_PROCESSOR_THREADS intra-op threads
(default 1) and restores the caller's setting: on a host whose cores are busy (vLLM engine and
tensor-parallel workers spinning) many threads per small operation oversubscribe the cores.
Float images and other resampling modes take the general path (resize in the input's dtype,
as the original), run at the caller's thread count.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import threading
import warnings
from collections.abc import Iterator, Sequence
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


# Pixel dtypes the original's resize takes: uint8, or a float it resizes in that same dtype.
_FLOAT_DTYPES = (np.float16, np.float32, np.float64)


def _to_numpy(image: Any, what: str) -> np.ndarray:
    """A torch tensor or numpy array as the original reads it (`tensor.detach().cpu().numpy()`)."""
    if isinstance(image, torch.Tensor):
        try:
            return image.detach().cpu().numpy()
        except TypeError as exc:  # bfloat16 and other dtypes numpy lacks: the original fails the same way
            raise Molmo2InputError(
                f"{what} tensor of dtype {image.dtype} is not supported; use uint8, or float16/32/64 in [0, 1]"
            ) from exc
    if isinstance(image, np.ndarray):
        return image
    raise Molmo2InputError(
        f"unsupported {what} type {type(image).__name__}; pass a PIL image, an HxWx3 numpy array or torch tensor"
    )


def check_pixels(array: np.ndarray, what: str = "image") -> torch.Tensor:
    """An HxWx3 uint8 / float16 / float32 / float64 array as a tensor of that dtype.

    Exactly what the original's resize takes: it permutes the array as HxWxC, resizes it in its
    own dtype (uint8 or float) and normalises with 3-channel means, so any other layout fails
    there (channel-first, HxW, HxWx1, RGBA) and any other dtype fails its uint8 assertion.
    Those are refused here with the reason instead of being read another way.
    """
    if array.dtype != np.uint8 and array.dtype.type not in _FLOAT_DTYPES:
        raise Molmo2InputError(f"{what} dtype {array.dtype} is not supported; use uint8, or float16/32/64 in [0, 1]")
    if array.dtype != np.uint8 and not np.isfinite(array).all():
        # The original would resize NaN/inf into the pixels; refused on purpose (docs/robustness.md).
        raise Molmo2InputError(f"float {what} contains NaN or inf values")
    if array.ndim != 3 or array.shape[-1] != 3:
        hint = ""
        if array.ndim == 3 and array.shape[0] in (1, 3, 4):
            hint = " (channel-first arrays are not transposed by the original: permute to HxWx3)"
        elif array.ndim == 2 or (array.ndim == 3 and array.shape[-1] in (1, 2, 4)):
            hint = " (the original does not convert grayscale or alpha arrays: pass HxWx3 RGB, or a PIL image)"
        raise Molmo2InputError(
            f"{what} array must be HxWx3 (height, width, RGB), got shape {tuple(array.shape)}{hint}"
        )
    h, w = array.shape[:2]
    if h == 0 or w == 0:
        raise Molmo2InputError(f"{what} has zero size ({w}x{h}); Molmo2 needs at least 1x1 pixels")
    if h * w > _MAX_PIXELS:
        raise Molmo2InputError(f"{what} of {w}x{h} pixels exceeds the decompression-bomb limit of {_MAX_PIXELS} pixels")
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    if not array.flags.writeable or any(st < 0 for st in array.strides):
        # torch.from_numpy refuses negative strides, which np.ascontiguousarray keeps on
        # length-1 axes; the original reads such arrays (cv2's img[..., ::-1] included).
        array = array.copy()
    return torch.from_numpy(np.ascontiguousarray(array))


def image_to_tensor(image: Any, do_convert_rgb: bool = True) -> torch.Tensor:
    """Accept what the original image processor accepts: PIL images in any mode PIL converts to
    RGB, and HxWx3 arrays / tensors of uint8 or float (values in [0, 1], clipped after resizing).

    Returns an HxWx3 tensor in the input's dtype: uint8 for PIL images and uint8 arrays, else
    float16/32/64. The original resizes float pixels in their own dtype, so a float16 or float64
    image must not be cast to float32 before resizing (its bits would differ).
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
    else:
        array = _to_numpy(image, "image")
    return check_pixels(array, "image")


def _resize(hwc: torch.Tensor, height: int, width: int, mode: InterpolationMode) -> torch.Tensor:
    """Resize in the input's own dtype (uint8, float16, float32 or float64), as the original;
    float results are clipped to [0, 1] in that dtype. Callers cast to float32 afterwards."""
    chw = hwc.permute(2, 0, 1)
    out = TF.resize(chw, [height, width], interpolation=mode, antialias=False)
    if hwc.dtype == torch.uint8:
        return out.permute(1, 2, 0)  # torchvision rounds uint8 results back into range itself
    return out.clamp(0.0, 1.0).permute(1, 2, 0)


# -- intra-op threads ----------------------------------------------------------------------

THREADS_ENV = "MOLMO2_SHIM_PROCESSOR_THREADS"
_DEFAULT_THREADS = 1
_local = threading.local()


@functools.lru_cache(maxsize=8)
def _parse_threads(raw: str) -> int:
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if n < 1:
        warnings.warn(f"{THREADS_ENV}={raw!r} is not a positive integer; using {_DEFAULT_THREADS}", stacklevel=3)
        return _DEFAULT_THREADS
    return n


def processor_threads() -> int:
    """Intra-op threads the processor's own torch work may use (MOLMO2_SHIM_PROCESSOR_THREADS)."""
    raw = os.environ.get(THREADS_ENV, "").strip()
    return _parse_threads(raw) if raw else _DEFAULT_THREADS


@contextlib.contextmanager
def bounded_threads() -> Iterator[int]:
    """Run the enclosed torch work on at most `processor_threads()` intra-op threads.

    Yields the caller's own thread count, which is what the original processor would run with
    (torch's bilinear kernel choice depends on it, see `_resize_hwc`). The caller's setting is
    restored on exit; nested uses keep the outermost caller's count. With OpenMP (torch's CPU
    backend) the setting is per OS thread, so other threads' torch work is not affected.
    """
    caller = getattr(_local, "caller_threads", None)
    if caller is not None:
        yield caller
        return
    caller = torch.get_num_threads()
    n = min(processor_threads(), caller)
    _local.caller_threads = caller
    if n != caller:
        torch.set_num_threads(n)
    try:
        yield caller
    finally:
        if n != caller:
            torch.set_num_threads(caller)
        _local.caller_threads = None


@contextlib.contextmanager
def _threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    if before != n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if before != n:
            torch.set_num_threads(before)


def _generic_kernel(caller_threads: int, height: int, width: int) -> bool:
    """Whether the original's bilinear resize to height x width runs torch's generic kernel.

    torch's CPU kernel (2.8; later sources have the same rule, and `_channels_as_batch_is_generic`
    checks it at run time) resizes a 3-channel float image with its "channels last" kernel
    when the output is small (height + width <= 128) or when it runs on one intra-op thread,
    and with the generic separable one otherwise. The two round differently (the uint8 results
    differ by one step on a few pixels per image), so the original's pixels depend on torch's
    thread count, and the shim reproduces the kernel the original gets at the caller's count.
    """
    return caller_threads > 1 and height + width > 128


class _Source:
    """A uint8 HxWx3 image as float32 in the two layouts the resize may take, each made once."""

    def __init__(self, hwc: torch.Tensor) -> None:
        self.hwc = hwc

    @functools.cached_property
    def planar(self) -> torch.Tensor:
        """[3, h, w] contiguous (one transposing copy)."""
        out = torch.empty((3, int(self.hwc.shape[0]), int(self.hwc.shape[1])), dtype=torch.float32)
        out.copy_(self.hwc.permute(2, 0, 1))
        return out

    @functools.cached_property
    def channels_last(self) -> torch.Tensor:
        """[1, 3, h, w] with channels-last strides, as the original's `.to(float32)` makes it
        (a straight conversion, no transposition)."""
        return self.hwc.to(torch.float32).permute(2, 0, 1).unsqueeze(0)


def _upsample_into(x: torch.Tensor, out: torch.Tensor) -> None:
    """torch's bilinear resize of [1, 3, h, w] into `out` [1, 3, H, W] (any strides): the op
    F.interpolate calls, given the output so that a channels-last one is written in place."""
    size = [int(out.shape[2]), int(out.shape[3])]
    try:
        torch._C._nn.upsample_bilinear2d(x, size, False, None, None, out=out)
    except (TypeError, RuntimeError):  # pragma: no cover - a torch without this overload
        out.copy_(F.interpolate(x, size=size, mode="bilinear", align_corners=False))


def _resize_hwc(src: _Source, height: int, width: int, caller_threads: int) -> torch.Tensor:
    """Bilinear resize (no antialias, half-pixel centres) to a [height, width, 3] float32
    tensor, bit for bit as the original's torchvision call at `caller_threads` threads."""
    out = torch.empty((1, height, width, 3), dtype=torch.float32)
    if not _generic_kernel(caller_threads, height, width):
        # The channels-last kernel: chosen for any thread count when the output is small, and
        # here the caller runs one thread (so this thread does too). It writes this HWC buffer.
        _upsample_into(src.channels_last, out.permute(0, 3, 1, 2))
    elif _channels_as_batch_is_generic(caller_threads, torch.get_num_threads()):
        # [3, 1, h, w]: one channel per image, which torch always resizes with the generic
        # kernel (at any thread count), so this thread count can stay bounded.
        _, h, w = src.planar.shape
        planar = F.interpolate(src.planar.view(3, 1, h, w), size=[height, width], mode="bilinear", align_corners=False)
        out[0].copy_(planar.view(3, height, width).permute(1, 2, 0))
    else:  # pragma: no cover - not the case on torch 2.8: run the original's call as it is
        with _threads(caller_threads):
            _upsample_into(src.channels_last, out.permute(0, 3, 1, 2))
    return out[0]


@functools.lru_cache(maxsize=8)
def _channels_as_batch_is_generic(caller_threads: int, threads: int) -> bool:
    """Check once per thread setting that resizing [C, 1, h, w] on `threads` threads gives the
    original's [1, C, h, w] result on `caller_threads` threads (the kernel rule above)."""
    g = torch.Generator().manual_seed(0)
    hwc = torch.randint(0, 256, (37, 61, 3), dtype=torch.uint8, generator=g)
    original_form = hwc.permute(2, 0, 1).unsqueeze(0).to(torch.float32)  # channels-last strides, as the original's
    with _threads(caller_threads):
        want = F.interpolate(original_form, size=[150, 97], mode="bilinear", align_corners=False)
    with _threads(threads):
        got = F.interpolate(original_form.contiguous().view(3, 1, 37, 61), size=[150, 97], mode="bilinear", align_corners=False)
    return torch.equal(want, got.view(1, 3, 150, 97))


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


def _patchify(canvases: list[tuple[torch.Tensor, int, int]], cfg: ImageProcessingConfig, out: torch.Tensor | None = None) -> torch.Tensor:
    """All crops of several canvases as float32 [crops, patches_per_crop, patch*patch*3].

    One output buffer (`out`, or a new one), filled straight from the strided crop views in a
    single copy (fresh multi-megabyte buffers cost page faults).
    """
    total = sum(r * c for _, r, c in canvases)
    p = cfg.patch_size
    n = cfg.crop_patches
    if out is None:
        out = torch.empty((total, cfg.patches_per_crop, p * p * 3), dtype=torch.float32)
    at = 0
    for canvas, rows, cols in canvases:
        out[at:at + rows * cols].view(rows, cols, n, n, p, p, 3).copy_(_patch_view(canvas, rows, cols, cfg))
        at += rows * cols
    return out


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


def _uniform(values: tuple[float, ...]) -> bool:
    return len(set(values)) == 1


def _uint8_crops_into(out: torch.Tensor, hwc: torch.Tensor, targets: Sequence[tuple[int, int, int, int]],
                      cfg: ImageProcessingConfig, caller_threads: int) -> None:
    """Crops of a uint8 HxWx3 image, bilinear, into `out` [crops, patches_per_crop, p*p*3].

    `targets` are (height, width, rows, cols): resize the image to height x width and cut
    rows x cols crops at stride `window_size`, in order. Per pixel this is the original's
    chain of float32 operations: bilinear resize of the uint8 values as float32 (the kernel
    the original gets, `_resize_hwc`), round (its uint8 round trip: the values lie in
    [0, 255], so the cast is exact), divide by 255, subtract the mean, divide by the std.
    """
    src = _Source(hwc)
    p, n = cfg.patch_size, cfg.crop_patches
    if _uniform(cfg.image_mean) and _uniform(cfg.image_std):
        # Scalar operands give the same float32 results as the original's 3-wide broadcast.
        mean: float | torch.Tensor = cfg.image_mean[0]
        std: float | torch.Tensor = cfg.image_std[0]
    else:
        mean = torch.tensor(cfg.image_mean, dtype=torch.float32)
        std = torch.tensor(cfg.image_std, dtype=torch.float32)
    at = 0
    for height, width, rows, cols in targets:
        canvas = _resize_hwc(src, height, width, caller_threads)
        canvas.round_()
        canvas.div_(255.0)
        canvas.sub_(mean)
        dst = out[at:at + rows * cols].view(rows, cols, n, n, p, p, 3)
        torch.div(_patch_view(canvas, rows, cols, cfg), std, out=dst)
        at += rows * cols


def crops_into(out: torch.Tensor, hwc: torch.Tensor, targets: Sequence[tuple[int, int, int, int]],
               cfg: ImageProcessingConfig, caller_threads: int) -> None:
    """Normalised crops of an HxWx3 image tensor into `out` (see `_uint8_crops_into` for
    `targets`). Run inside `bounded_threads()`, whose value is `caller_threads`."""
    mode = _RESAMPLE.get(cfg.resample)
    if mode is None:
        raise ValueError(f"unsupported resample mode {cfg.resample} in preprocessor_config.json")
    if hwc.dtype == torch.uint8 and mode == InterpolationMode.BILINEAR:
        _uint8_crops_into(out, hwc, targets, cfg, caller_threads)
        return
    # Float pixels (resized in their own dtype) and other modes: the original's torchvision
    # call as it is, at the caller's thread count.
    with _threads(caller_threads):
        canvases = [(_resize(hwc, height, width, mode), rows, cols) for height, width, rows, cols in targets]
        _normalize_(_patchify(canvases, cfg, out), hwc.dtype == torch.uint8, cfg)


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


@functools.lru_cache(maxsize=1024)
def image_tiling(height: int, width: int, cfg: ImageProcessingConfig) -> tuple[int, int]:
    return select_tiling(height - cfg.margin_pixels, width - cfg.margin_pixels, cfg.window_size, cfg.max_crops)


def image_grid_for_size(height: int, width: int, cfg: ImageProcessingConfig) -> tuple[int, int, int, int]:
    """The pooled grid of an image of this size, without touching pixels."""
    return pooling_layout(*image_tiling(height, width, cfg), cfg)[1]


def image_crops(height: int, width: int, cfg: ImageProcessingConfig) -> int:
    """Crops (low-res one included) of an image of this size."""
    rows, cols = image_tiling(height, width, cfg)
    return rows * cols + 1


def _preprocess_tensor(hwc: torch.Tensor, cfg: ImageProcessingConfig, caller_threads: int,
                       out: torch.Tensor | None = None) -> ProcessedImage:
    height, width = int(hwc.shape[0]), int(hwc.shape[1])
    rows, cols = image_tiling(height, width, cfg)
    p = cfg.patch_size
    if out is None:
        out = torch.empty((rows * cols + 1, cfg.patches_per_crop, p * p * 3), dtype=torch.float32)
    crop = cfg.crop_size
    targets = [(crop, crop, 1, 1),
               (rows * cfg.window_size + cfg.margin_pixels, cols * cfg.window_size + cfg.margin_pixels, rows, cols)]
    crops_into(out, hwc, targets, cfg, caller_threads)
    pooling, grid = pooling_layout(rows, cols, cfg)
    return ProcessedImage(pixel_values=out, token_pooling=pooling.clone(), grid=grid)


def preprocess_image(image: Any, cfg: ImageProcessingConfig) -> ProcessedImage:
    with bounded_threads() as caller:
        return _preprocess_tensor(image_to_tensor(image, cfg.do_convert_rgb), cfg, caller)


def preprocess_images(images: Sequence[Any], cfg: ImageProcessingConfig) -> tuple[list[ProcessedImage], torch.Tensor]:
    """Several images into one pixel buffer (no concatenation afterwards): each image's
    `pixel_values` is its slice of the returned [all crops, patches, p*p*3] tensor."""
    with bounded_threads() as caller:
        tensors = [image_to_tensor(im, cfg.do_convert_rgb) for im in images]
        counts = [image_crops(int(t.shape[0]), int(t.shape[1]), cfg) for t in tensors]
        p = cfg.patch_size
        pixels = torch.empty((sum(counts), cfg.patches_per_crop, p * p * 3), dtype=torch.float32)
        out, at = [], 0
        for t, count in zip(tensors, counts):
            out.append(_preprocess_tensor(t, cfg, caller, pixels[at:at + count]))
            at += count
        return out, pixels


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
