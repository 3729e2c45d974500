"""Frame sampling of whole videos, by the original's `uniform_last_frame` rule, and the frame limit.

Expected frame picks are worked out by hand from the rule (frames at max_fps from frame 0,
rounded half to even, plus the last frame; `num_frames` evenly spaced frames, truncated, when
the video is longer than (num_frames - 1) / max_fps seconds).
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest

import golden

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")

from molmo2_shim.errors import Molmo2InputError  # noqa: E402
from molmo2_shim.processing.processor import Molmo2Processor  # noqa: E402


@pytest.fixture(scope="module")
def processor() -> Molmo2Processor:
    return Molmo2Processor.from_pretrained(golden.CHECKPOINT)


def numbered_frames(count: int) -> np.ndarray:
    """Frame k is a flat grey of value 8 * k, so the frames a processor kept can be read back."""
    assert count <= 32
    return np.stack([np.full((24, 32, 3), 8 * k, np.uint8) for k in range(count)])


def kept_frames(out) -> list[int]:
    # Flat frames survive resizing unchanged; normalisation is (v / 255 - 0.5) / 0.5 here.
    values = (out["pixel_values_videos"].mean(dim=(1, 2)).numpy() * 0.5 + 0.5) * 255
    return [int(round(v / 8)) for v in values]


def timestamps_in_prompt(processor, out) -> list[str]:
    return re.findall(r"\d+\.\d", processor.tokenizer.decode(out["input_ids"][0].tolist()))


@pytest.mark.parametrize(
    "total, fps, picks, stamps",
    [
        (20, 30.0, [0, 15, 19], ["0.0", "0.5", "0.6"]),  # step 15 frames, then the last one
        (9, 4.0, [0, 2, 4, 6, 8], ["0.0", "0.5", "1.0", "1.5", "2.0"]),
        (5, 2.0, [0, 1, 2, 3, 4], ["0.0", "0.5", "1.0", "1.5", "2.0"]),
        (10, 3.0, [0, 2, 3, 4, 6, 8, 9], ["0.0", "0.7", "1.0", "1.3", "2.0", "2.7", "3.0"]),  # step 1.5
        (2, 30.0, [0, 1], ["0.0", "0.0"]),
    ],
)
def test_whole_video_is_sampled_at_max_fps_with_the_last_frame(processor, total, fps, picks, stamps):
    out = processor(
        text="<|video|>What happens?", videos=[numbered_frames(total)],
        video_metadata={"fps": fps, "total_num_frames": total}, do_sample_frames=True,
    )
    assert kept_frames(out) == picks
    assert out["video_grids"][0].tolist()[0] == len(picks)
    assert timestamps_in_prompt(processor, out) == stamps


def test_long_video_gets_num_frames_evenly_spaced(processor, monkeypatch):
    monkeypatch.setattr(processor, "video_config", dataclasses.replace(processor.video_config, num_frames=4))
    # 10 frames at 1 fps last 10 s > (4 - 1) / 2 s: linspace(0, 9, 4) -> 0, 3, 6, 9.
    out = processor(text="<|video|>", videos=[numbered_frames(10)], video_metadata={"fps": 1.0},
                    do_sample_frames=True)
    assert kept_frames(out) == [0, 3, 6, 9]
    assert timestamps_in_prompt(processor, out) == ["0.0", "3.0", "6.0", "9.0"]
    # 16 frames at 1 fps: linspace(0, 15, 4) = 0, 5, 10, 15.
    out = processor(text="<|video|>", videos=[numbered_frames(16)], video_metadata={"fps": 1.0},
                    do_sample_frames=True)
    assert kept_frames(out) == [0, 5, 10, 15]
    # Already-sampled frames over the limit are refused, not silently cut.
    with pytest.raises(Molmo2InputError, match="at most 4"):
        processor(text="<|video|>", videos=[numbered_frames(5)], video_metadata={"fps": 1.0},
                  do_sample_frames=False)


def test_presampled_frames_are_kept_as_given(processor):
    # vLLM's loaders return clips with frame indices into the source video; nothing is dropped.
    meta = {"fps": 30.0, "frames_indices": [0, 30, 45, 90], "do_sample_frames": False}
    out = processor(text="<|video|>", videos=[numbered_frames(4)], video_metadata=meta, do_sample_frames=False)
    assert kept_frames(out) == [0, 1, 2, 3]
    assert timestamps_in_prompt(processor, out) == ["0.0", "1.0", "1.5", "3.0"]


def test_the_checkpoint_can_turn_sampling_off(processor, monkeypatch):
    monkeypatch.setattr(processor, "video_config", dataclasses.replace(processor.video_config, do_sample_frames=False))
    out = processor(text="<|video|>", videos=[numbered_frames(20)], video_metadata={"fps": 30.0},
                    do_sample_frames=True)
    assert kept_frames(out) == list(range(20))
