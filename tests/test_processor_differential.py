"""Differential tests: the built-in processor against the ORIGINAL Molmo2 processor (the hub's
remote code, loaded as an oracle by tests/original.py).

A seeded fuzzer draws inputs over image sizes (1x1, tiny, extreme aspect ratios, large, tiling
boundaries), PIL modes, numpy arrays and torch tensors (uint8 / float16 / float32 / float64 /
others, HxW, HxWx1, HxWx3, HxWx4, channel-first), value ranges, 0-3 images in every container
the original takes, prompt shapes (placeholders, none, surplus, text around them, batches),
and videos (frame counts, sizes, dtypes, containers, fps values, frames_indices from 0, not
from 0 and not contiguous, do_sample_frames on / off / default, metadata with and without
duration, videos around the long-video threshold). Each input goes to both processors:

* both accept: every output must be bit-identical (keys, dtypes, shapes, bytes), and so must
  the video timestamps (values, and the text they print as);
* both refuse: the shim's error must be a Molmo2InputError;
* the original refuses, the shim accepts: allowed only for the shim's documented defaults for
  incomplete video metadata (completed_metadata below), and then the original, given the
  completed metadata, must accept and agree bit for bit;
* the original accepts, the shim refuses: allowed only for the deliberate refusals in
  DELIBERATE_REFUSALS (each with its reason), always as a Molmo2InputError.

After the sample, explicit regression tests for every difference found.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import random
import re
import shutil
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import original
import pytest

import golden

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")

from PIL import Image  # noqa: E402
from transformers import AutoProcessor  # noqa: E402
from transformers.video_utils import VideoMetadata  # noqa: E402

from molmo2_shim.errors import Molmo2InputError  # noqa: E402
from molmo2_shim.processing.layout import SpecialTokenIds  # noqa: E402
from molmo2_shim.processing.processor import Molmo2Processor  # noqa: E402
from molmo2_shim.processing.video import frames_and_timestamps  # noqa: E402

SEED = 0x30D02
NUM_CASES = 200
SMALL_NUM_FRAMES = 8  # a num_frames that puts the long-video threshold within a few dozen frames

# The shim refuses these although the original accepts them (reason in the message each matches).
DELIBERATE_REFUSALS = {
    # More frames than the checkpoint's num_frames, sent unsampled: the model never saw such
    # videos (the original would build a prompt of any length).
    "frame cap": r"this checkpoint takes at most \d+ \(num_frames",
    # NaN/inf pixels: the original resizes them into NaN pixel values.
    "non-finite pixels": r"NaN or inf",
    # Metadata whose frames_indices do not match the frames: the original prints one timestamp
    # per index, so its prompt and its pixels disagree.
    "indices vs frames": r"frame indices for \d+ frames",
    # No usable fps: timestamps cannot be computed (the original only fails once it needs them).
    "no fps": r"needs a positive fps",
    # Fewer/more metadata than videos: the original silently drops videos.
    "metadata count": r"video\(s\) but \d+ video metadata",
    # text=[["a", "b"]]: the tokenizer reads it as a text pair / pre-tokenized words, which no
    # Molmo2 prompt is (and placeholders in it would never be expanded).
    "pre-tokenized text": r"pre-tokenized text is not supported",
}


# -- the two processors -------------------------------------------------------------------


class Pair:
    """The original and the shim on one checkpoint, recording the timestamps each computes."""

    def __init__(self, checkpoint: Path, num_frames: int | None = None) -> None:
        self.orig = AutoProcessor.from_pretrained(str(original.checkpoint_with_remote_code(str(checkpoint))),
                                                  trust_remote_code=True)
        self.shim = Molmo2Processor.from_pretrained(checkpoint)
        if num_frames is not None:
            self.orig.video_processor.num_frames = num_frames
            self.shim.video_config = dataclasses.replace(self.shim.video_config, num_frames=num_frames)
        self.orig_meta: list[Any] | None = None
        self.shim_clips: list[Any] | None = None
        inner_pre = self.orig.video_processor.preprocess
        inner_videos = self.shim.process_videos

        def preprocess(*args: Any, **kwargs: Any) -> Any:
            out = inner_pre(*args, **kwargs)
            self.orig_meta = list(out["video_metadata"])
            return out

        def process_videos(*args: Any, **kwargs: Any) -> Any:
            out = inner_videos(*args, **kwargs)
            self.shim_clips = out
            return out

        self.orig.video_processor.preprocess = preprocess
        self.shim.process_videos = process_videos

    def slow_tokenizing_shim(self) -> Molmo2Processor:
        """The shim forced onto its full-string tokenization path (the fast path's oracle)."""
        slow = copy.copy(self.shim)
        slow.__dict__["_plain_special_tokens"] = False
        slow.__dict__.pop("process_videos", None)
        return slow


@lru_cache(maxsize=4)
def pair(num_frames: int | None = None) -> Pair:
    return Pair(golden.CHECKPOINT, num_frames)


def run(proc: Any, kwargs: dict[str, Any]) -> Any:
    try:
        return dict(proc(**copy.deepcopy(kwargs)))
    except Exception as exc:  # noqa: BLE001 - any refusal is an outcome here
        return exc


def output_problems(o: dict[str, Any], s: dict[str, Any]) -> list[str]:
    problems = []
    if set(o) != set(s):
        problems.append(f"keys differ: original {sorted(o)}, shim {sorted(s)}")
    for key in sorted(set(o) & set(s)):
        a, b = o[key], s[key]
        if type(a) is not type(b):
            problems.append(f"{key}: type {type(a).__name__} vs {type(b).__name__}")
            continue
        if isinstance(a, torch.Tensor):
            a, b = a.numpy(), b.numpy()
        a, b = np.asarray(a), np.asarray(b)
        if a.dtype != b.dtype or a.shape != b.shape:
            problems.append(f"{key}: {a.dtype}{a.shape} vs {b.dtype}{b.shape}")
        elif a.tobytes() != b.tobytes():
            where = np.argwhere(a != b)[:3].tolist() if a.dtype != object else "?"
            problems.append(f"{key}: values differ (first at {where})")
    return problems


def timestamp_problems(p: Pair) -> list[str]:
    if p.orig_meta is None or p.shim_clips is None:
        return []
    problems = []
    for k, (meta, clip) in enumerate(zip(p.orig_meta, p.shim_clips)):
        try:
            want = list(meta.timestamps)
        except (ValueError, AttributeError):  # the original cannot compute them (it never needed them here)
            continue
        got = list(clip.timestamps)
        if [float(t) for t in want] != [float(t) for t in got] or [f"{t:.1f}" for t in want] != [f"{t:.1f}" for t in got]:
            problems.append(f"video {k} timestamps: original {want[:8]}..., shim {got[:8]}...")
    if len(p.orig_meta) != len(p.shim_clips):
        problems.append(f"{len(p.orig_meta)} videos in the original, {len(p.shim_clips)} in the shim")
    return problems


def completed_metadata(kwargs: dict[str, Any]) -> dict[str, Any] | None:
    """The input with the shim's defaults for incomplete video metadata written in (what the
    shim documents it does), every metadata a VideoMetadata without extra keys, or None when
    nothing needed that."""
    videos, meta = kwargs.get("videos"), kwargs.get("video_metadata")
    if videos is None or meta is None:
        return None
    from transformers.video_utils import make_batched_videos

    try:
        clips = make_batched_videos(copy.deepcopy(videos))
    except Exception:  # noqa: BLE001
        return None
    nested = isinstance(meta, list)
    metas = [m for g in meta for m in (g if isinstance(g, list) else [g])] if nested else [meta]
    if len(metas) != len(clips):
        return None
    changed = len({isinstance(m, dict) for m in metas}) > 1  # transformers converts such lists' dicts only
    fixed = []                                                # when the first item is one
    names = {f.name for f in dataclasses.fields(VideoMetadata)}
    for clip, m in zip(clips, metas):
        d = dict(m) if isinstance(m, dict) else {k: getattr(m, k) for k in names}
        if d.get("total_num_frames") is None:
            d["total_num_frames"], changed = len(clip), True
        if d.get("frames_indices") is None:
            d["frames_indices"], changed = list(range(len(clip))), True
        if set(d) - names:
            changed = True
        fixed.append(VideoMetadata(**{k: v for k, v in d.items() if k in names}))
    if not changed:
        return None
    return {**kwargs, "video_metadata": fixed}


def check_case(p: Pair, kwargs: dict[str, Any], label: str, slow_too: bool = False) -> str:
    """Run both processors; assert the contract; return the outcome ("same", "refused", ...)."""
    p.orig_meta = p.shim_clips = None
    o = run(p.orig, kwargs)
    orig_meta = p.orig_meta
    s = run(p.shim, kwargs)
    p.orig_meta = orig_meta
    o_err, s_err = isinstance(o, Exception), isinstance(s, Exception)
    if o_err and s_err:
        assert isinstance(s, Molmo2InputError), (
            f"{label}: both refuse, but the shim raised {type(s).__name__}: {s} (original: {type(o).__name__}: {o})"
        )
        return "refused"
    if not o_err and s_err:
        reason = next((k for k, rx in DELIBERATE_REFUSALS.items() if re.search(rx, str(s))), None)
        assert isinstance(s, Molmo2InputError) and reason, (
            f"{label}: the original accepts but the shim raised {type(s).__name__}: {s}"
        )
        return f"deliberate refusal ({reason})"
    if o_err and not s_err:
        fixed = completed_metadata(kwargs)
        assert fixed is not None, f"{label}: the original refuses ({type(o).__name__}: {o}) but the shim accepts"
        p.orig_meta = None
        o = run(p.orig, fixed)
        assert not isinstance(o, Exception), (
            f"{label}: the shim accepts incomplete metadata, but the original refuses even the completed one: {o}"
        )
        outcome = "lenient metadata"
    else:
        outcome = "same"
    problems = output_problems(o, s) + timestamp_problems(p)
    assert not problems, f"{label}: outputs differ:\n  " + "\n  ".join(problems)
    if slow_too:
        slow = run(p.slow_tokenizing_shim(), kwargs)
        assert not isinstance(slow, Exception) and not output_problems(s, slow), (
            f"{label}: the full-string tokenization path disagrees with the fast path"
        )
    return outcome


# -- the fuzzer ---------------------------------------------------------------------------

FPS_VALUES = [1, 2, 2.0, 3.0, 2.5, 24.0, 25, 29.97, 30.0, 0.5, 0.7, 60.0, 1.83, np.float32(29.97), np.float64(12.5)]
PIL_MODES = ["RGB"] * 4 + ["L", "RGBA", "P", "LA", "I;16", "CMYK", "1", "I", "F", "YCbCr", "PA"]
BEFORE = ["", "", "Describe ", "Q: ", "Image 1", "\n", "  ", "<|im_start|>user\n", "abc  ", "Watch:"]
AFTER = ["", "", " What is this?", "<|im_end|>\n", "  \n", " and", "<|im_end|>\n<|im_start|>assistant\n"]


def image_size(r: random.Random) -> tuple[int, int]:
    k = r.random()
    if k < 0.07:
        return 1, 1
    if k < 0.22:
        return r.randint(1, 24), r.randint(1, 24)  # smaller than the overlap margins
    if k < 0.34:
        long, short = r.randint(100, 3000), r.randint(1, 12)
        return (long, short) if r.random() < 0.5 else (short, long)
    if k < 0.44:  # a tiling's exact canvas size, or one pixel off (argmin/argmax ties)
        return r.randint(1, 3) * 266 + 112 + r.choice([-1, 0, 1]), r.randint(1, 3) * 266 + 112 + r.choice([-1, 0, 1])
    if k < 0.93:
        return r.randint(25, 700), r.randint(25, 700)
    return r.randint(900, 1500), r.randint(900, 1900)


def pixels(r: random.Random, g: np.random.Generator, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    if dtype == "uint8":
        if r.random() < 0.2:  # smooth content as well as noise
            ramp = np.linspace(0, 255, num=int(np.prod(shape))).reshape(shape)
            return ramp.astype(np.uint8)
        return g.integers(0, 256, shape, dtype=np.uint8)
    if dtype in ("float16", "float32", "float64"):
        lo, hi = r.choice([(0.0, 1.0), (0.0, 1.0), (-0.25, 1.25), (0.0, 255.0)])
        return (g.random(shape) * (hi - lo) + lo).astype(dtype)
    if dtype == "bool":
        return g.random(shape) < 0.5
    return g.integers(0, 256, shape).astype(dtype)


def pil_image(r: random.Random, g: np.random.Generator, h: int, w: int) -> Image.Image:
    mode = r.choice(PIL_MODES)
    if mode == "I;16":
        return Image.fromarray(g.integers(0, 65536, (h, w), dtype=np.uint16))
    if mode == "I":
        return Image.fromarray(g.integers(-1000, 70000, (h, w)).astype(np.int32))
    if mode == "F":
        return Image.fromarray((g.random((h, w)) * 300 - 20).astype(np.float32))
    base = Image.fromarray(pixels(r, g, (h, w, 3), "uint8"))
    if mode == "RGBA":
        base.putalpha(Image.fromarray(g.integers(0, 256, (h, w), dtype=np.uint8)))
        return base
    return base.convert(mode)


def array_image(r: random.Random, g: np.random.Generator, h: int, w: int) -> Any:
    dtype = r.choice(["uint8"] * 4 + ["float16", "float32", "float64"] * 2)
    if r.random() < 0.07:
        dtype = r.choice(["int64", "uint16", "bool", "int8"])
    layout = r.choice(["hwc"] * 20 + ["hw", "hw1", "hwc4", "chw", "3h4", "hwc2"])
    if layout != "hwc":  # the original resizes these (W as channels) before it fails: keep them small
        h, w = min(h, 40), min(w, 40)
    shape = {"hwc": (h, w, 3), "hw": (h, w), "hw1": (h, w, 1), "hwc4": (h, w, 4), "chw": (3, h, w),
             "3h4": (3, h, 4), "hwc2": (h, w, 2)}[layout]
    if dtype == "float16":  # torch resizes half precision slowly on the CPU
        shape = tuple(min(d, 400) for d in shape)
    arr = pixels(r, g, shape, dtype)
    k = r.random()
    if k < 0.1 and arr.ndim == 3:
        arr = arr[:, :, ::-1]  # negative strides (cv2's BGR -> RGB idiom)
    elif k < 0.15 and arr.ndim == 3:
        arr = np.asfortranarray(arr)
    if r.random() < 0.35 and arr.dtype != np.uint16:
        t = torch.from_numpy(arr.copy())  # a copy: ascontiguousarray may keep a negative stride
        if r.random() < 0.1 and t.is_floating_point():
            t = t.to(torch.bfloat16)
        return t
    return arr


def one_image(r: random.Random, g: np.random.Generator) -> Any:
    h, w = image_size(r)
    return pil_image(r, g, h, w) if r.random() < 0.45 else array_image(r, g, h, w)


def prompt(r: random.Random, n: int, placeholder: str) -> str:
    between = r.choice(["", " ", "\n", " and "])
    return r.choice(BEFORE) + between.join([placeholder] * n) + r.choice(AFTER)


def text_arg(r: random.Random, text: str) -> Any:
    return [text] if r.random() < 0.25 else text


def image_case(r: random.Random, g: np.random.Generator) -> dict[str, Any]:
    n = r.choice([0, 1, 1, 1, 2, 2, 3])
    images = [one_image(r, g) for _ in range(n)]
    n_ph = r.choice([n, n, n, max(n - 1, 0), n + 1, 0])
    kwargs: dict[str, Any] = {"text": text_arg(r, prompt(r, n_ph, "<|image|>"))}
    if n == 0:
        kwargs["images"] = r.choice([None, None, None, [], [[]]])
    else:
        k = r.random()
        same_arrays = all(isinstance(i, np.ndarray) and i.ndim == 3 for i in images) and len({i.shape for i in images}) == 1
        if k < 0.1 and same_arrays:
            kwargs["images"] = np.stack(images)  # a 4-D batch
        elif k < 0.2:
            kwargs["images"] = [[i] for i in images]  # nested
        elif k < 0.3 and n == 1:
            kwargs["images"] = images[0]
        elif k < 0.35:
            kwargs["images"] = tuple(images)
        else:
            kwargs["images"] = images
        if r.random() < 0.07:  # a batch of two prompts sharing the images
            kwargs["text"] = [kwargs["text"] if isinstance(kwargs["text"], str) else kwargs["text"][0]] * 2
            if isinstance(kwargs["images"], list):
                kwargs["images"] = kwargs["images"] + kwargs["images"]
    return kwargs


def video_frames_input(r: random.Random, g: np.random.Generator, t: int, dtype: str) -> Any:
    h, w = (1, 1) if r.random() < 0.05 else (r.randint(2, 70), r.randint(2, 70))
    frames = pixels(r, g, (t, h, w, 3), dtype)
    k = r.random()
    if k < 0.4:
        return frames
    if k < 0.5:
        return torch.from_numpy(frames)
    if k < 0.62:
        return list(frames)
    if k < 0.78 and dtype == "uint8":
        mode = r.choice(["RGB"] * 4 + ["YCbCr", "L", "RGBA"])
        return [Image.fromarray(f).convert(mode) for f in frames]
    if k < 0.85 and t == 1:
        return frames[0]  # a bare frame: a one-frame video
    if k < 0.9:
        return [[*frames]] if r.random() < 0.5 else [frames]
    if k < 0.93:
        return [frames[0], frames[0][:1]]  # frames of different sizes
    return frames


def video_metadata(r: random.Random, t: int, fps: Any, sampled: bool) -> Any:
    total = t
    if sampled and r.random() < 0.1:
        total = r.choice([max(t - r.randint(1, 3), 1), t + 1])  # describes fewer / more frames than sent
    k = r.random()
    if k < 0.25:
        indices = None if sampled else list(range(t))
    elif k < 0.5:
        indices = list(range(t))
    elif k < 0.7:
        start = r.randint(1, 40)
        indices = list(range(start, start + t))
    elif k < 0.85:
        indices = sorted(r.sample(range(0, 6 * t + 5), t))
    else:  # decord-style float indices (timestamp * fps)
        indices = [i * float(fps) / 2 for i in range(t)]
    if not sampled and r.random() < 0.04:
        indices = None  # the shim defaults to 0..n-1; the original refuses
    meta: dict[str, Any] = {"total_num_frames": total, "fps": fps}
    if indices is not None:
        meta["frames_indices"] = indices
    d = r.random()
    if d < 0.35:
        meta["duration"] = total / float(fps)
    elif d < 0.55:
        meta["duration"] = max(total / float(fps) - r.choice([0.1, 0.6, 2.0]), 0.01)  # a decoder's shorter duration
    form = r.random()
    if form < 0.08:
        meta.pop("total_num_frames")  # lenient: defaults to the frame count
    if form < 0.5:
        return meta
    return VideoMetadata(**meta)


def video_case(r: random.Random, g: np.random.Generator) -> tuple[dict[str, Any], int | None]:
    num_frames = None
    fps = r.choice(FPS_VALUES)
    if r.random() < 0.4:  # around the long-video threshold of a small num_frames
        num_frames = SMALL_NUM_FRAMES
        fps = r.choice([1, 2, 2.0, 3.0, 1.5])
        t = max(1, int(round((SMALL_NUM_FRAMES - 1) / 2 * float(fps))) + r.randint(-3, 3))
    else:
        t = r.choice([1, 2, 3, 4, 5, 7, 9, 12, 16])
    dtype = r.choice(["uint8"] * 6 + ["float16", "float32", "float64"])
    if dtype == "float16":  # torch resizes half precision slowly on the CPU
        t = min(t, 3)
    ds = r.choice([True, True, False, False, "absent"])
    sampled = ds is True or ds == "absent"
    n_videos = 2 if r.random() < 0.08 else 1
    videos = [video_frames_input(r, g, t, dtype) for _ in range(n_videos)]
    metas = [video_metadata(r, t, fps, sampled) for _ in range(n_videos)]
    text = prompt(r, r.choice([1] * 8 + [0, 2]), "<|video|>")
    kwargs: dict[str, Any] = {"text": text_arg(r, text)}
    if n_videos == 1:
        kwargs["videos"] = videos[0] if r.random() < 0.6 else [videos[0]]
        kwargs["video_metadata"] = metas[0] if r.random() < 0.6 else [metas[0]]
    else:
        if r.random() < 0.5:  # one prompt per video, same video twice so the rows can stack
            videos, metas = [videos[0], videos[0]], [metas[0], metas[0]]
            kwargs["text"] = [text, text]
        kwargs["videos"], kwargs["video_metadata"] = videos, metas
    if ds != "absent":
        kwargs["do_sample_frames"] = ds
    if r.random() < 0.08:
        kwargs["images"] = [one_image(r, g)]
        kwargs["text"] = "<|image|>" + text
    return kwargs, num_frames


def text_case(r: random.Random, g: np.random.Generator) -> dict[str, Any]:
    options = ["", "hello", "<|image|>", "<|video|>", "a<|image|>b", "<|im_end|>x", "  ", "Describe the picture."]
    k = r.random()
    if k < 0.5:
        return {"text": text_arg(r, r.choice(options))}
    if k < 0.7:
        s = r.choice(options)
        return {"text": [s, s]}
    if k < 0.85:
        return {"text": [r.choice(options), r.choice(options)]}
    return {"text": r.choice([None, [], ("hello",), [["a", "b"]], 3])}


def make_case(index: int) -> tuple[dict[str, Any], int | None]:
    r = random.Random(SEED * 1000 + index)
    g = np.random.default_rng(SEED * 1000 + index)
    k = r.random()
    if k < 0.5:
        kwargs, num_frames = image_case(r, g), None
    elif k < 0.88:
        kwargs, num_frames = video_case(r, g)
    else:
        kwargs, num_frames = text_case(r, g), None
    kwargs["return_tensors"] = r.choice(["pt"] * 8 + ["np", None])
    return kwargs, num_frames


def describe(x: Any) -> Any:
    if isinstance(x, Image.Image):
        return f"PIL {x.mode} {x.size[0]}x{x.size[1]}"
    if isinstance(x, np.ndarray):
        return f"ndarray{x.shape} {x.dtype} strides={x.strides}"
    if isinstance(x, torch.Tensor):
        return f"tensor{tuple(x.shape)} {x.dtype}"
    if isinstance(x, (list, tuple)):
        items = [describe(i) for i in x[:6]] + (["..."] if len(x) > 6 else [])
        return items if isinstance(x, list) else tuple(items)
    if isinstance(x, dict):
        return {k: describe(v) for k, v in x.items()}
    if isinstance(x, VideoMetadata):
        return f"VideoMetadata({describe({k: getattr(x, k) for k in ('total_num_frames', 'fps', 'duration', 'frames_indices')})})"
    return x


OUTCOMES: dict[str, int] = {}


@pytest.mark.parametrize("index", range(NUM_CASES))
def test_fuzzed_inputs_match_the_original(index):
    kwargs, num_frames = make_case(index)
    label = f"case {index} {describe(kwargs)} (num_frames={num_frames or 'checkpoint'})"
    outcome = check_case(pair(num_frames), kwargs, label, slow_too=index % 10 == 0)
    OUTCOMES[outcome] = OUTCOMES.get(outcome, 0) + 1


def test_the_sample_reaches_every_outcome():
    """The fixed sample exercises agreement, joint refusal and both documented divergences."""
    outcomes = dict(OUTCOMES)
    if sum(outcomes.values()) < NUM_CASES:
        pytest.skip("runs after the whole sample (run the module, not one test)")
    assert outcomes.get("same", 0) > NUM_CASES // 2, outcomes
    assert outcomes.get("refused", 0) > 10, outcomes
    assert outcomes.get("lenient metadata", 0) > 0, outcomes
    assert any(k.startswith("deliberate refusal") for k in outcomes), outcomes


# -- regressions: each difference the fuzzer found, as a fixed case ----------------------------


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def same(kwargs: dict[str, Any], num_frames: int | None = None, p: Pair | None = None, slow_too: bool = False) -> None:
    outcome = check_case(p or pair(num_frames), {"return_tensors": "pt", **kwargs}, describe(kwargs), slow_too=slow_too)
    assert outcome == "same"


def both_refuse(kwargs: dict[str, Any], match: str, num_frames: int | None = None) -> None:
    p = pair(num_frames)
    assert check_case(p, {"return_tensors": "pt", **kwargs}, describe(kwargs)) == "refused"
    with pytest.raises(Molmo2InputError, match=match):
        p.shim(**kwargs)


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize("hw", [(1, 1), (37, 501), (480, 640)])
def test_float_arrays_are_resized_in_their_own_dtype(dtype, hw):
    # Before: cast to float32 first, so float16 / float64 pixels differed in the last bits.
    image = (rng().random((*hw, 3)) * 1.2 - 0.1).astype(dtype)
    same({"text": "<|image|>", "images": [image]})
    same({"text": "<|video|>", "videos": [np.stack([image, image])], "do_sample_frames": False,
          "video_metadata": VideoMetadata(total_num_frames=2, fps=2.0, frames_indices=[0, 1])})


def video(t: int, h: int = 20, w: int = 28, seed: int = 0) -> np.ndarray:
    return rng(seed).integers(0, 256, (t, h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("indices", [list(range(5, 14)), [3, 4, 9, 10, 11, 20, 21, 30, 31]])
def test_sampled_video_is_timed_by_frame_position(indices):
    # Before: timestamps came from the metadata's frames_indices; the original replaces them by
    # the positions it samples (frames_indices of another length are fine too).
    meta = VideoMetadata(total_num_frames=9, fps=3.0, frames_indices=indices)
    same({"text": "At<|video|>?", "videos": [video(9)], "video_metadata": meta, "do_sample_frames": True}, slow_too=True)
    same({"text": "<|video|>", "videos": [video(9)], "video_metadata": dict(total_num_frames=9, fps=3.0, frames_indices=[1, 2]),
          "do_sample_frames": True})


def test_long_video_threshold_uses_frame_count_and_fps():
    # 351 frames at 1.83 fps last 191.8 s by frame count (> 383 / 2 s: 351 evenly spaced frames),
    # 191 s by the decoder's duration. Before, the shim read the duration and sampled 384 frames
    # at 2 fps. Compared on the checkpoint's own num_frames (384) without touching pixels.
    vp = pair().orig.video_processor
    meta = VideoMetadata(total_num_frames=351, fps=1.83, duration=191.0)
    want = vp.sample_frames(copy.deepcopy(meta), num_frames=vp.num_frames, max_fps=vp.max_fps)
    frames = list(np.zeros((351, 1, 1, 3), np.uint8))
    kept, stamps = frames_and_timestamps(frames, meta, pair().shim.video_config, do_sample_frames=True)
    assert len(want) == len(kept) == 351
    assert stamps == [i / 1.83 for i in want]
    # The same rule end to end, on num_frames=8: 12 frames at 3 fps last 4 s > 7 / 2 s, so 8
    # evenly spaced frames (by the 3.4 s duration, 9 frames at 2 fps: refused as over the limit).
    meta = VideoMetadata(total_num_frames=12, fps=3.0, duration=3.4)
    same({"text": "<|video|>", "videos": [video(12, 8, 8)], "video_metadata": meta}, num_frames=SMALL_NUM_FRAMES)


def test_frame_sampling_matches_the_original_around_the_real_threshold():
    """Frame choice only (no pixels), on the checkpoint's num_frames: videos a few frames either
    side of (num_frames - 1) / max_fps seconds, with durations that disagree with the count."""
    vp, cfg = pair().orig.video_processor, pair().shim.video_config
    r = random.Random(SEED)
    for _ in range(60):
        fps = r.choice([1, 1.83, 2, 2.5, 3.0, 4, 5.0, 29.97, np.float32(2.9)])
        total = max(1, int((cfg.num_frames - 1) / cfg.max_fps * float(fps)) + r.randint(-4, 4))
        meta = VideoMetadata(total_num_frames=total, fps=fps, duration=r.choice([None, total / float(fps) - 0.7]))
        try:
            want = vp.sample_frames(copy.deepcopy(meta), num_frames=vp.num_frames, max_fps=vp.max_fps)
        except AssertionError:  # the original's own check: more frames than num_frames
            with pytest.raises(Molmo2InputError):
                frames_and_timestamps(list(np.zeros((total, 1, 1, 1))), meta, cfg, do_sample_frames=True)
            continue
        positions = np.arange(total).reshape(total, 1, 1, 1)  # frame k holds k
        kept, stamps = frames_and_timestamps(list(positions), meta, cfg, do_sample_frames=True)
        assert [int(f[0, 0, 0]) for f in kept] == want.tolist(), (total, fps)
        assert [f"{t:.1f}" for t in stamps] == [f"{i / fps:.1f}" for i in want], (total, fps)


def test_a_batch_of_one_prompt():
    # Before: TypeError (the tokenizer got a list).
    image = rng().integers(0, 256, (40, 60, 3), dtype=np.uint8)
    same({"text": ["<|image|>"], "images": [image]})
    same({"text": ["Describe <|image|> briefly."], "images": image})


def test_batches_of_prompts_follow_the_originals_rules():
    image = rng().integers(0, 256, (40, 60, 3), dtype=np.uint8)
    same({"text": ["<|image|>a", "<|image|>b"], "images": [image, image]}, slow_too=True)
    same({"text": ["a", "b"]})
    same({"text": ["<|im_end|>a", "bc"]})  # one row starts with BOS: every row still gets one
    same({"text": ["", ""]})
    both_refuse({"text": ["a", "a b c"]}, "different lengths")  # unpadded rows cannot stack
    both_refuse({"text": []}, "non-empty list")


def test_empty_text_gives_the_originals_float_ids():
    # np.array([[]]) is float64, so the original's BOS-only ids are floats.
    same({"text": ""})
    same({"text": "", "return_tensors": "np"})


@pytest.mark.parametrize("shape", [(3, 20, 4), (3, 20, 30), (1, 20, 30), (20, 30), (20, 30, 1), (20, 30, 4), (20, 30, 2)])
def test_arrays_that_are_not_hwc_rgb_are_refused(shape):
    # Before: (3, H, 4) was read as a 3-row RGBA image, channel-first arrays were transposed,
    # grayscale arrays repeated and alpha dropped; the original refuses them all.
    arr = rng().integers(0, 256, shape, dtype=np.uint8)
    both_refuse({"text": "<|image|>", "images": [torch.from_numpy(arr)]}, "HxWx3")
    both_refuse({"text": "<|image|>", "images": [arr]}, "HxWx3")


def test_a_3xhx3_tensor_is_an_image_3_pixels_high():
    same({"text": "<|image|>", "images": [torch.from_numpy(rng().integers(0, 256, (3, 50, 3), dtype=np.uint8))]})


@pytest.mark.parametrize("images", [[], [[]]])
@pytest.mark.parametrize("text", ["<|image|>", "no placeholder"])
def test_an_empty_image_list_is_refused(images, text):
    both_refuse({"text": text, "images": images}, "empty list")


def test_image_containers():
    a, b = (rng(i).integers(0, 256, (30, 50, 3), dtype=np.uint8) for i in (1, 2))
    same({"text": "<|image|><|image|>", "images": np.stack([a, b])})  # a 4-D batch (before: refused)
    same({"text": "<|image|><|image|>", "images": [[a], [b]]})
    same({"text": "<|image|>", "images": a[:, :, ::-1]})  # negative strides
    # ... also on a length-1 axis, where np.ascontiguousarray keeps them and torch.from_numpy
    # refuses them (before: a ValueError from torch).
    same({"text": "<|image|>", "images": [a[:1][::-1], a[:, :1][:, ::-1]]})
    both_refuse({"text": "<|image|>", "images": (a,)}, "unsupported image type tuple")
    # torch refuses bfloat16 -> numpy, unless intel_extension_for_pytorch (which vLLM's CPU
    # backend imports) is loaded: then both convert it, and the outputs must be the same.
    bf16 = {"text": "<|image|>", "images": [torch.rand(10, 10, 3).bfloat16()]}
    assert check_case(pair(None), {"return_tensors": "pt", **bf16}, describe(bf16)) in ("refused", "same")
    both_refuse({"text": "<|image|>", "images": [a.astype(np.int64)]}, "dtype int64")
    both_refuse({"text": None, "images": [a]}, "text must be")
    both_refuse({"text": ("<|image|>",), "images": [a]}, "text must be")


def test_pil_modes_are_converted_to_rgb():
    base = Image.fromarray(rng().integers(0, 256, (33, 47, 3), dtype=np.uint8))
    for mode in ["L", "RGBA", "P", "LA", "CMYK", "1", "I", "F", "YCbCr", "PA", "RGBX"]:
        same({"text": "<|image|>", "images": [base.convert(mode)]})
    same({"text": "<|image|>", "images": [Image.fromarray(rng().integers(0, 65536, (20, 30), dtype=np.uint16))]})  # I;16


def test_video_frames_are_not_converted():
    frames = video(4)
    meta = VideoMetadata(total_num_frames=4, fps=2.0, frames_indices=[0, 1, 2, 3])
    # YCbCr PIL frames: the original stacks their raw values; before, the shim converted to RGB.
    same({"text": "<|video|>", "videos": [Image.fromarray(f).convert("YCbCr") for f in frames], "video_metadata": meta,
          "do_sample_frames": False})
    both_refuse({"text": "<|video|>", "videos": [Image.fromarray(f).convert("L") for f in frames],
                 "video_metadata": meta, "do_sample_frames": False}, "video array")
    both_refuse({"text": "<|video|>", "videos": [Image.fromarray(f).convert("RGBA") for f in frames],
                 "video_metadata": meta, "do_sample_frames": False}, "HxWx3")


def test_video_containers_and_counts():
    meta = VideoMetadata(total_num_frames=5, fps=2.0)
    same({"text": "<|video|>", "videos": torch.from_numpy(video(5)), "video_metadata": meta})
    same({"text": "<|video|>", "videos": video(1)[0], "video_metadata": VideoMetadata(total_num_frames=1, fps=2.0)})
    # Two videos (before: ValueError): one per prompt of a batch, or a second without tokens.
    same({"text": ["<|video|>a", "<|video|>a"], "videos": [video(5), video(5)], "video_metadata": [meta, meta]})
    same({"text": "<|video|>a", "videos": [video(5), video(3)],
          "video_metadata": [meta, VideoMetadata(total_num_frames=3, fps=3.0)]})
    same({"text": "no placeholder", "videos": [video(5)], "video_metadata": meta})
    both_refuse({"text": "<|video|>", "videos": [], "video_metadata": meta}, "videos must be")
    both_refuse({"text": "<|video|>", "videos": [None], "video_metadata": meta}, "videos must be")
    both_refuse({"text": "<|video|><|video|>", "videos": [video(5)], "video_metadata": meta}, "at most one video")
    both_refuse({"text": "<|video|>", "videos": [video(5)], "video_metadata": VideoMetadata(total_num_frames=7, fps=2.0)},
                "total_num_frames=7 but 5 frames")
    both_refuse({"text": "<|video|>", "videos": [video(5)]}, "positive fps")
    both_refuse({"text": "<|video|>", "videos": [[video(1)[0], video(1, 10, 10)[0]]], "video_metadata": meta},
                "same shape")


def test_sampling_a_prefix_of_the_video():
    # total_num_frames below the frames sent: the original samples from the first ones.
    same({"text": "<|video|>", "videos": [video(9)], "video_metadata": VideoMetadata(total_num_frames=6, fps=2.0)})


def test_timestamps_keep_the_metadata_number_types():
    # A float32 fps gives float32 timestamps; their one-decimal text can differ from float64's.
    for fps in (np.float32(2.9), np.float32(0.7)):
        meta = VideoMetadata(total_num_frames=7, fps=fps, frames_indices=[3, 5, 7, 8, 11, 12, 20])
        same({"text": "x <|video|>", "videos": [video(7)], "video_metadata": meta, "do_sample_frames": False})
        same({"text": "x <|video|>", "videos": [video(7)], "video_metadata": meta, "do_sample_frames": True})


@pytest.mark.parametrize("return_tensors", [None, "np", "pt"])
def test_return_tensors(return_tensors):
    image = rng().integers(0, 256, (30, 40, 3), dtype=np.uint8)
    meta = VideoMetadata(total_num_frames=3, fps=2.0)
    same({"text": "<|image|>a<|video|>", "images": [image], "videos": [video(3)], "video_metadata": meta,
          "return_tensors": return_tensors})


def test_documented_divergences():
    p = pair(SMALL_NUM_FRAMES)
    # Unsampled videos over num_frames, and NaN pixels: refused on purpose.
    n = SMALL_NUM_FRAMES + 1
    kwargs = {"text": "<|video|>", "videos": [video(n, 8, 8)], "do_sample_frames": False, "return_tensors": "pt",
              "video_metadata": VideoMetadata(total_num_frames=n, fps=2.0, frames_indices=list(range(n)))}
    assert check_case(p, kwargs, "over num_frames") == "deliberate refusal (frame cap)"
    kwargs = {"text": "<|image|>", "images": [np.full((8, 8, 3), np.nan, np.float32)], "return_tensors": "pt"}
    assert check_case(p, kwargs, "NaN") == "deliberate refusal (non-finite pixels)"
    # vLLM-style metadata dicts without total_num_frames / frames_indices: the frame count and
    # 0..n-1, as transformers fills them in for a video sent without metadata.
    kwargs = {"text": "<|video|>", "videos": [video(5)], "video_metadata": {"fps": 2.0}, "do_sample_frames": False,
              "return_tensors": "pt"}
    assert check_case(p, kwargs, "no total_num_frames") == "lenient metadata"
    kwargs = {"text": "<|video|>", "videos": [video(5)], "video_metadata": {"fps": 2.0, "do_sample_frames": True},
              "return_tensors": "pt"}
    assert check_case(p, kwargs, "vLLM flag in the metadata") == "lenient metadata"


# -- tokenizer-dependent rules, on an edited copy of the tiny checkpoint's tokenizer -----------


@pytest.fixture(scope="module")
def edited_pair(tmp_path_factory) -> Pair:
    """The tiny checkpoint with BOS = <|endoftext|> (id 0) and a BPE merge of two spaces ("ĠĠ"),
    as real Qwen vocabularies have; the tiny one lacks it."""
    target = tmp_path_factory.mktemp("molmo2-tiny-edited-tokenizer")
    for f in golden.CHECKPOINT.iterdir():
        if f.name != "model.safetensors":
            shutil.copy(f, target / f.name)
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        cfg = json.loads((target / name).read_text())
        cfg["bos_token"] = "<|endoftext|>"
        (target / name).write_text(json.dumps(cfg))
    tok = json.loads((target / "tokenizer.json").read_text())
    model = tok["model"]
    last = "".join(model["merges"][-1] if isinstance(model["merges"][-1], list) else model["merges"][-1].split())
    model["vocab"]["ĠĠ"] = model["vocab"].pop(last)  # reuse the id of the last merge's token
    model["merges"] = [["Ġ", "Ġ"]] + model["merges"][:-1]
    (target / "tokenizer.json").write_text(json.dumps(tok))
    return Pair(target)


def test_bos_id_0_falls_through_to_eos(edited_pair):
    tok = edited_pair.shim.tokenizer
    assert tok.bos_token_id == 0
    assert edited_pair.shim.special.bos == (tok.bos_token_id or tok.eos_token_id) == tok.eos_token_id
    same({"text": "hello"}, p=edited_pair)
    same({"text": "<|image|>", "images": [rng().integers(0, 256, (20, 20, 3), dtype=np.uint8)]}, p=edited_pair)

    class Stub:  # from_tokenizer alone, as the original's `bos or eos`
        bos_token_id, eos_token_id = 0, 7

        def get_vocab(self):
            return tok.get_vocab()

    assert SpecialTokenIds.from_tokenizer(Stub()).bos == 7


@pytest.mark.parametrize("before", ["abc  ", "Watch:  ", "x \n  ", "\n\n  "])
def test_text_before_the_video_joins_the_first_timestamp(edited_pair, before):
    # The original tokenizes "abc  0.0 <im_start>...": the spaces split differently from
    # "abc  " tokenized alone. Before, the shim tokenized the two separately.
    tok = edited_pair.shim.tokenizer
    assert tok(before + "0.0 ")["input_ids"] != tok(before)["input_ids"] + tok("0.0 ")["input_ids"]
    meta = VideoMetadata(total_num_frames=3, fps=2.0, frames_indices=[0, 1, 2])
    same({"text": before + "<|video|>  after", "videos": [video(3)], "video_metadata": meta, "do_sample_frames": False},
         p=edited_pair, slow_too=True)
