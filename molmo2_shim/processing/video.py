"""Molmo2 video preprocessing: every frame is one 378x378 crop, pooled 3x3, with a timestamp."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import Molmo2InputError
from .image import _RESAMPLE, ImageProcessingConfig, _normalize_, _patchify, _resize, pool_windows, to_uint8_hwc
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
    timestamps: list[float]

    def as_dict(self) -> dict[str, torch.Tensor]:
        return {
            "pixel_values_videos": self.pixel_values,
            "video_token_pooling": self.token_pooling,
            "video_grids": torch.tensor([self.grid], dtype=torch.int64),
        }


def frames_and_timestamps(
    video: Any, metadata: Any = None, cfg: VideoProcessingConfig | None = None, do_sample_frames: bool | None = None
) -> tuple[list[Any], list[float]]:
    """The frames Molmo2 sees of a video input, and the time of each.

    Frames arrive either already sampled (the default, as vLLM's loaders return a clip) or as
    the whole decoded video, flagged by `do_sample_frames` in vLLM's metadata or passed as an
    argument. The whole video is sampled here by the checkpoint's rule, as the original does.
    """
    if isinstance(video, tuple) and len(video) == 2 and isinstance(video[1], dict):
        video, metadata = video
    while isinstance(video, list) and len(video) == 1 and getattr(video[0], "ndim", 0) == 4:
        video = video[0]  # [[frames]] as vLLM's native Molmo2 passes it
    if isinstance(video, np.ndarray):
        if video.ndim != 4:
            raise Molmo2InputError(f"a video array must be [frames, H, W, 3], got shape {video.shape}")
        frames = list(video)
    elif isinstance(video, torch.Tensor):
        frames = list(video.detach().cpu().numpy())
    else:
        frames = list(video)
    if not frames:
        raise Molmo2InputError("the video has no frames; Molmo2 needs at least one")
    fps = _meta(metadata, "fps")
    indices = _meta(metadata, "frames_indices")
    if indices is None:
        indices = list(range(len(frames)))
    if len(indices) != len(frames):
        raise Molmo2InputError(f"video metadata lists {len(indices)} frame indices for {len(frames)} frames")
    if fps is None or float(fps) <= 0:
        raise Molmo2InputError(
            "video metadata needs a positive fps to compute the frame timestamps (vLLM's 'video/jpeg' "
            "data URIs carry none: send a video file, or frames with {'fps': ..., 'frames_indices': ...})"
        )
    fps = float(fps)
    if cfg is not None:
        if do_sample_frames is None:
            do_sample_frames = bool(_meta(metadata, "do_sample_frames"))
        if do_sample_frames and cfg.do_sample_frames:
            keep = sample_frame_indices(len(frames), fps, _meta(metadata, "duration"), cfg)
            frames, indices = [frames[i] for i in keep], [indices[i] for i in keep]
        if len(frames) > cfg.num_frames:
            raise Molmo2InputError(
                f"the video has {len(frames)} frames; this checkpoint takes at most {cfg.num_frames} "
                "(num_frames in video_preprocessor_config.json). Send fewer frames, or the whole video "
                "with do_sample_frames=True in its metadata so it is sampled as the original does."
            )
    return frames, [float(i) / fps for i in indices]


def sample_frame_indices(total: int, fps: float, duration: float | None, cfg: VideoProcessingConfig) -> list[int]:
    """Positions of the frames the original keeps from a whole video of `total` frames.

    `uniform_last_frame`: frames at `max_fps` plus the last one; a video too long for
    `num_frames` frames at that rate gets `num_frames` evenly spaced ones instead.
    """
    if cfg.frame_sample_mode != "uniform_last_frame":
        raise Molmo2InputError(
            f"frame_sample_mode {cfg.frame_sample_mode!r} is not supported by molmo2-shim; send frames "
            "already sampled (do_sample_frames false)"
        )
    if total <= 2:
        return list(range(total))
    duration = float(duration) if duration else total / fps
    if duration > (cfg.num_frames - 1) / cfg.max_fps:
        return np.linspace(0, total - 1, num=min(cfg.num_frames, total)).astype(int).tolist()
    picks = np.arange(0.0, total - 1, fps / cfg.max_fps)
    if np.round(picks[-1]) != total - 1:  # the last frame is always shown
        picks = np.append(picks, total - 1)
    return np.round(picks).astype(int).tolist()


def _meta(metadata: Any, key: str) -> Any:
    if metadata is None:
        return None
    if isinstance(metadata, dict):
        return metadata.get(key)
    return getattr(metadata, key, None)


def preprocess_video(
    video: Any, cfg: VideoProcessingConfig, video_metadata: Any = None, do_sample_frames: bool | None = None, **_: Any
) -> ProcessedVideo:
    while isinstance(video_metadata, (list, tuple)):
        video_metadata = video_metadata[0] if video_metadata else None
    return preprocess_frames(*frames_and_timestamps(video, video_metadata, cfg, do_sample_frames), cfg)


def preprocess_frames(frames: Sequence[Any], timestamps: list[float], cfg: VideoProcessingConfig) -> ProcessedVideo:
    """Pixels and pooling indices of the frames frames_and_timestamps chose (at least one)."""
    fcfg = cfg.frame
    mode = _RESAMPLE[fcfg.resample]
    resized = [_resize(to_uint8_hwc(f, fcfg.do_convert_rgb), fcfg.crop_size, fcfg.crop_size, mode) for f in frames]
    pixels = _normalize_(_patchify([(r, 1, 1) for r in resized], fcfg), resized[0].dtype == torch.uint8, fcfg)
    n = fcfg.crop_patches
    per_frame = pool_windows(torch.arange(n * n).reshape(n, n), *fcfg.pooling_size)
    offsets = torch.arange(len(frames)).repeat_interleave(per_frame.shape[0])[:, None] * fcfg.patches_per_crop
    pooling = torch.where(per_frame.repeat(len(frames), 1) >= 0, per_frame.repeat(len(frames), 1) + offsets, -1)
    rows, cols = cfg.frame_grid
    return ProcessedVideo(pixels, pooling.to(torch.int64), (len(frames), rows, cols), timestamps)


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
