"""Molmo2 video preprocessing: every frame is one 378x378 crop, pooled 3x3, with a timestamp."""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import Molmo2InputError
from .image import (
    ImageProcessingConfig,
    _to_numpy,
    bounded_threads,
    check_pixels,
    crops_into,
    pool_windows,
)
from .layout import LayoutFlags, SpecialTokenIds, frame_prefix, frame_tokens


@dataclass(frozen=True)
class VideoProcessingConfig:
    frame: ImageProcessingConfig = ImageProcessingConfig(pooling_size=(3, 3))
    frame_sample_mode: str = "uniform_last_frame"
    max_fps: float = 2.0
    sampling_fps: float = 2.0
    num_frames: int = 384
    do_sample_frames: bool = True

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VideoProcessingConfig:
        frame = ImageProcessingConfig.from_dict({"pooling_size": [3, 3], **d})
        return cls(
            frame=frame,
            frame_sample_mode=str(d.get("frame_sample_mode", cls.frame_sample_mode)),
            max_fps=float(d.get("max_fps", cls.max_fps)),
            sampling_fps=float(d.get("sampling_fps", cls.sampling_fps)),
            num_frames=int(d.get("num_frames", cls.num_frames)),
            do_sample_frames=bool(d.get("do_sample_frames", cls.do_sample_frames)),
        )

    # The hub video processor's attribute names (vLLM's native Molmo2 reads them).
    @property
    def pooling_size(self) -> tuple[int, int]:
        return self.frame.pooling_size

    @property
    def size(self) -> dict[str, int]:
        return self.frame.size

    @property
    def patch_size(self) -> int:
        return self.frame.patch_size

    @property
    def frame_grid(self) -> tuple[int, int]:
        n = self.frame.crop_patches
        ph, pw = self.frame.pooling_size
        return -(-n // ph), -(-n // pw)


@dataclass
class ProcessedVideo:
    pixel_values: torch.Tensor  # [T, patches_per_crop, patch*patch*3]
    token_pooling: torch.Tensor  # [T*rows*cols, pool_h*pool_w], local to this video
    grid: tuple[int, int, int]  # (T, rows, cols)
    timestamps: list[Any]  # frame_index / fps in the metadata's own number types

    def as_dict(self) -> dict[str, torch.Tensor]:
        return {
            "pixel_values_videos": self.pixel_values,
            "video_token_pooling": self.token_pooling,
            "video_grids": torch.tensor([self.grid], dtype=torch.int64),
        }


def video_frames(video: Any) -> list[np.ndarray]:
    """One video's frames as numpy arrays (views where the input is one array), as the original
    reads them: a [T, H, W, C] array or tensor, or a list of frames that it stacks with
    `np.stack([np.array(frame) for frame in frames])` (PIL frames are not converted to RGB)."""
    if isinstance(video, str):
        raise Molmo2InputError("video paths and URLs are not decoded by molmo2-shim's processor; pass the decoded frames")
    if isinstance(video, (np.ndarray, torch.Tensor)):
        array = _to_numpy(video, "video")
        if array.ndim != 4:
            raise Molmo2InputError(f"a video array must be [frames, H, W, 3], got shape {tuple(array.shape)}")
        return list(array)
    if not isinstance(video, (list, tuple)):
        raise Molmo2InputError(f"unsupported video type {type(video).__name__}; pass a [frames, H, W, 3] array or a list of frames")
    from PIL import Image

    frames = [_to_numpy(np.asarray(f) if isinstance(f, Image.Image) else f, "video frame") for f in video]
    if len({f.shape for f in frames}) > 1:
        raise Molmo2InputError(
            f"the video's frames have different shapes {sorted({f.shape for f in frames})}; the original stacks "
            "them into one array, so they must all have the same size"
        )
    if len({f.dtype for f in frames}) > 1:
        frames = list(np.stack(frames))  # the original's stack promotes mixed dtypes; so does this one
    return frames


def frames_and_timestamps(
    video: Any, metadata: Any = None, cfg: VideoProcessingConfig | None = None, do_sample_frames: bool | None = None
) -> tuple[list[Any], list[Any]]:
    """The frames Molmo2 sees of a video input, and the time of each.

    Frames arrive either already sampled (the default, as vLLM's loaders return a clip) or as
    the whole decoded video, flagged by `do_sample_frames` in vLLM's metadata or passed as an
    argument. The whole video is sampled here by the checkpoint's rule, as the original does.

    Timestamps are computed as the original computes them, `frame_index / fps` with the
    metadata's own values (a float32 fps stays float32), so their text is the same:
    sampled frames are timed by their position in the array the metadata describes (the
    original replaces `frames_indices` by the positions it picked); frames sent as they are
    keep the metadata's `frames_indices`. Metadata that lacks `total_num_frames` or
    `frames_indices` gets the values transformers fills in for a video without metadata
    (the frame count, and 0..n-1), where the original refuses a dict without them.
    """
    if isinstance(video, tuple) and len(video) == 2 and isinstance(video[1], dict):
        video, metadata = video
    while isinstance(video, list) and len(video) == 1 and getattr(video[0], "ndim", 0) == 4:
        video = video[0]  # [[frames]] as vLLM's native Molmo2 passes it
    frames = video_frames(video)
    if not frames:
        raise Molmo2InputError("the video has no frames; Molmo2 needs at least one")
    fps = _meta(metadata, "fps")
    if not _is_number(fps) or not fps > 0:
        raise Molmo2InputError(
            "video metadata needs a positive fps to compute the frame timestamps (vLLM's 'video/jpeg' data URIs "
            "carry none: send a video file, or frames with {'fps': ..., 'frames_indices': ...})"
        )
    sample = False
    if cfg is not None:
        if do_sample_frames is None:
            do_sample_frames = bool(_meta(metadata, "do_sample_frames"))
        sample = bool(do_sample_frames) and cfg.do_sample_frames
    if sample:
        total = _meta(metadata, "total_num_frames")
        total = len(frames) if total is None else total
        if not isinstance(total, (int, np.integer)) or isinstance(total, bool):
            raise Molmo2InputError(f"video metadata total_num_frames must be an integer, got {total!r}")
        keep = sample_frame_indices(total, fps, cfg)  # not int(): total / fps keeps the original's number types
        if len(keep) and int(keep.max()) >= len(frames):
            raise Molmo2InputError(
                f"video metadata says total_num_frames={total} but {len(frames)} frames were sent; "
                "frames are sampled from the whole video, so send all of them"
            )
        frames = [frames[i] for i in keep]
        indices: Sequence[Any] = keep  # np.int64 positions, as the original's frames_indices
    else:
        indices = _meta(metadata, "frames_indices")
        if indices is None:
            indices = list(range(len(frames)))
        if len(indices) != len(frames):
            raise Molmo2InputError(f"video metadata lists {len(indices)} frame indices for {len(frames)} frames")
        if not all(_is_number(i) for i in indices):
            raise Molmo2InputError("video metadata frames_indices must be numbers")
    if not frames:
        raise Molmo2InputError("the video has no frames; Molmo2 needs at least one")
    if cfg is not None and len(frames) > cfg.num_frames:
        raise Molmo2InputError(
            f"the video has {len(frames)} frames; this checkpoint takes at most {cfg.num_frames} "
            "(num_frames in video_preprocessor_config.json). Send fewer frames, or the whole video "
            "with do_sample_frames=True in its metadata so it is sampled as the original does."
        )
    return frames, [i / fps for i in indices]


def _is_number(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def sample_frame_indices(total: int, fps: Any, cfg: VideoProcessingConfig) -> np.ndarray:
    """Positions of the frames the original keeps from a whole video of `total` frames.

    `uniform_last_frame`: frames at `max_fps` plus the last one; a video too long for
    `num_frames` frames at that rate gets `num_frames` evenly spaced ones instead. The length
    is `total / fps` as the original computes it, never the metadata's `duration` (the two
    disagree by a frame's length or more, which moves the long-video threshold).
    """
    if cfg.frame_sample_mode != "uniform_last_frame":
        raise Molmo2InputError(
            f"frame_sample_mode {cfg.frame_sample_mode!r} is not supported by molmo2-shim; send frames "
            "already sampled (do_sample_frames false)"
        )
    if total <= 2:
        return np.arange(max(total, 0)).astype(int)
    if total / fps > (cfg.num_frames - 1) / cfg.max_fps:
        return np.linspace(0, total - 1, num=min(cfg.num_frames, total), endpoint=True).astype(int)
    picks = np.arange(0.0, total - 1, float(fps / cfg.max_fps))
    if np.round(picks[-1]) != total - 1:  # the last frame is always shown
        picks = np.append(picks, total - 1)
    if len(picks) > cfg.num_frames:  # the original's assertion fails here
        raise Molmo2InputError(
            f"sampling {total} frames at {fps} fps gives {len(picks)} frames, more than num_frames={cfg.num_frames}"
        )
    return np.round(picks).astype(int)


def _meta(metadata: Any, key: str) -> Any:
    if metadata is None:
        return None
    if isinstance(metadata, dict):
        return metadata.get(key)
    return getattr(metadata, key, None)


def batched_metadata(video_metadata: Any, num_videos: int) -> list[Any]:
    """One metadata per video, from what the original's `video_metadata` argument takes: one
    metadata (dict or VideoMetadata), a list of them, or a list of lists."""
    if video_metadata is None:
        metas: list[Any] = [None] * num_videos
    elif isinstance(video_metadata, list):
        if video_metadata and isinstance(video_metadata[0], list):
            metas = [m for group in video_metadata for m in group]
        else:
            metas = list(video_metadata)  # dicts and VideoMetadata alike, even mixed (the original
            # converts a list's dicts only when its first item is one, and fails on the others)
    elif isinstance(video_metadata, tuple):
        raise Molmo2InputError("video_metadata must be a metadata dict / VideoMetadata or a list of them, not a tuple")
    else:
        metas = [video_metadata]
    if len(metas) != num_videos:
        raise Molmo2InputError(
            f"{num_videos} video(s) but {len(metas)} video metadata; send one metadata per video "
            "(the original silently drops the videos without one)"
        )
    return metas


def preprocess_video(
    video: Any, cfg: VideoProcessingConfig, video_metadata: Any = None, do_sample_frames: bool | None = None, **_: Any
) -> ProcessedVideo:
    while isinstance(video_metadata, (list, tuple)):
        video_metadata = video_metadata[0] if video_metadata else None
    return preprocess_frames(*frames_and_timestamps(video, video_metadata, cfg, do_sample_frames), cfg)


def preprocess_frames(frames: Sequence[Any], timestamps: list[Any], cfg: VideoProcessingConfig) -> ProcessedVideo:
    """Pixels and pooling indices of the frames frames_and_timestamps chose (at least one).

    Each frame must be what the original's resize takes, HxWx3 uint8 or float; it is resized in
    its own dtype. No RGB conversion: the original converts nothing for video frames.
    """
    fcfg = cfg.frame
    tensors = [check_pixels(_to_numpy(f, "video frame"), "video frame") for f in frames]
    p, crop = fcfg.patch_size, fcfg.crop_size
    pixels = torch.empty((len(tensors), fcfg.patches_per_crop, p * p * 3), dtype=torch.float32)
    with bounded_threads() as caller:
        for i, t in enumerate(tensors):
            crops_into(pixels[i:i + 1], t, [(crop, crop, 1, 1)], fcfg, caller)
    n = fcfg.crop_patches
    per_frame = pool_windows(torch.arange(n * n).reshape(n, n), *fcfg.pooling_size)
    offsets = torch.arange(len(frames)).repeat_interleave(per_frame.shape[0])[:, None] * fcfg.patches_per_crop
    pooling = torch.where(per_frame.repeat(len(frames), 1) >= 0, per_frame.repeat(len(frames), 1) + offsets, -1)
    rows, cols = cfg.frame_grid
    return ProcessedVideo(pixels, pooling.to(torch.int64), (len(frames), rows, cols), list(timestamps))


def frame_block_length(cfg: VideoProcessingConfig, special: SpecialTokenIds, flags: LayoutFlags) -> int:
    """Tokens of one frame's block, without its timestamp text."""
    return len(frame_tokens(cfg.frame_grid, special, flags))


def video_token_ids(video: ProcessedVideo, tokenizer: Any, special: SpecialTokenIds, flags: LayoutFlags) -> list[int]:
    """Token ids replacing <|video|>: per frame, the timestamp text then the frame block.

    The timestamp text sits between special tokens, so tokenizing it on its own gives the ids
    the original gets from tokenizing the whole expanded string.
    """
    _, rows, cols = video.grid
    return video_tokens_for(video.timestamps, tokenizer, special, flags, (rows, cols))


def video_tokens_for(
    timestamps: Sequence[float], tokenizer: Any, special: SpecialTokenIds, flags: LayoutFlags, grid_hw: tuple[int, int]
) -> list[int]:
    out: list[int] = []
    block = frame_tokens(grid_hw, special, flags)
    for i, t in enumerate(timestamps):
        out.extend(tokenizer(frame_prefix(i, t), add_special_tokens=False)["input_ids"])
        out.extend(block)
    return out
