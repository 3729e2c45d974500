"""Parse Molmo2's pointing, counting and tracking answers, and score them as RL rewards.

Molmo2 answers "point to ..." / "count ..." / "track ..." prompts with HTML-like tags whose
coordinates are integers on a 0-1000 scale of the image (or video frame) it was shown:

    Counting the <points coords="1 1 990 800">label</points> shows a total of 1.
    <tracks coords="0.0 1 259 340;1.0 1 138 427">person</tracks>

`parse_points` turns such text into pixel coordinates of the ORIGINAL image(s), grouped per
image or per video frame, and refuses malformed output with `PointingFormatError` (what is
wrong and at which character). The reward helpers at the end (`count_reward`,
`points_in_boxes_reward`, `track_reward`) never raise on malformed model output: they score
it 0.0, because an exception inside a reward function kills a whole RL rollout batch.

The format is AllenAI's (allenai/molmo2, olmo/preprocessing/point_formatter.py); this is an
independent implementation that is stricter than their regexes, which silently skip what they
cannot read. docs/pointing.md describes the formats and the policies chosen here.

Pure Python: importable without torch, vLLM or transformers (verl reward workers often have
none of them).
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from .errors import Molmo2ShimError

__all__ = [
    "LEGACY_SCALE",
    "MOLMO2_SCALE",
    "CountStatement",
    "Frame",
    "Point",
    "PointingElement",
    "PointingFormatError",
    "PointingOutput",
    "Video",
    "count_reward",
    "parse_points",
    "points_in_boxes_reward",
    "track_reward",
]

# Molmo2 writes round(1000 * x / W) as "%03d"; Molmo-1 (the legacy tags) wrote 0-100 with one decimal.
MOLMO2_SCALE = 1000
LEGACY_SCALE = 100

Syntax = Literal["auto", "molmo2", "legacy"]
Size = tuple[float, float]
ImageSizes = Size | Sequence[Size]
Box = tuple[float, float, float, float]


class PointingFormatError(Molmo2ShimError, ValueError):
    """Model output that is not well-formed Molmo2 (or Molmo-1) pointing text.

    `reason` says what is wrong, `offset` is the character offset in the parsed text (None when
    the problem is not at one place, e.g. a count that disagrees with the points).
    """

    def __init__(self, reason: str, text: str | None = None, offset: int | None = None) -> None:
        self.reason = reason
        self.offset = offset
        message = reason
        if offset is not None:
            message += f" (at character {offset}"
            if text is not None:
                # A short window makes the error readable in RL logs without dumping the whole rollout.
                message += f", near {text[max(0, offset - 15) : offset + 25]!r}"
            message += ")"
        super().__init__(message)


# ----------------------------------------------------------------------------------------------
# Parsed output


@dataclass(frozen=True)
class Point:
    """One point: `x`, `y` in pixels of the original image/frame (None when no size was given),
    computed from `x_norm`, `y_norm` as written on the 0-`scale` scale (x_norm * W / scale)."""

    object_id: int
    x: float | None
    y: float | None
    x_norm: float
    y_norm: float
    scale: int
    offset: int  # character offset of the point's object id (or legacy x attribute) in the text


@dataclass(frozen=True)
class Frame:
    """The points of one image or one video frame of an element.

    Images: `image_index` is the 1-based index of the image in the prompt (Molmo2 writes "1"
    for a single image too). Video: `timestamp` is the time in seconds as written; when the
    caller gave the sampled frames' times, `frame_index` is the 0-based position of the nearest
    sampled frame and `video_frame` its frame number in the source video (if known).
    """

    points: tuple[Point, ...]
    image_index: int | None = None
    timestamp: float | None = None
    frame_index: int | None = None
    video_frame: int | None = None
    size: Size | None = None
    offset: int = 0


@dataclass(frozen=True)
class PointingElement:
    """One `<points>`, `<tracks>` or legacy `<point>` element."""

    tag: Literal["points", "tracks", "point"]
    syntax: Literal["molmo2", "legacy"]
    label: str
    alt: str | None
    frames: tuple[Frame, ...]
    scale: int
    offset: int
    end: int
    separator: str | None = None  # frame separator used: "\t" html-v1, ";" html-v2; None for one frame

    @property
    def is_track(self) -> bool:
        return self.tag == "tracks"

    @property
    def points(self) -> tuple[Point, ...]:
        return tuple(p for f in self.frames for p in f.points)

    @property
    def count(self) -> int:
        # Points get fresh ids 1..N across frames, so each point is one object; in tracks an id
        # is one object seen in many frames.
        if self.is_track:
            return len({p.object_id for p in self.points})
        return len(self.points)

    def tracks(self) -> dict[int, tuple[tuple[Frame, Point], ...]]:
        """Object id -> its (frame, point) pairs, ordered by time (text order without timestamps)."""
        frames = sorted(self.frames, key=lambda f: f.timestamp if f.timestamp is not None else 0.0)
        out: dict[int, list[tuple[Frame, Point]]] = {}
        for frame in frames:
            for p in frame.points:
                out.setdefault(p.object_id, []).append((frame, p))
        return {k: tuple(v) for k, v in out.items()}


@dataclass(frozen=True)
class CountStatement:
    """A count the text states: form is "point_then_count" ("Counting the ... shows a total of N."),
    "count_then_point" ("There are N ..."), "none" ("There are none."), "count" (the whole answer
    is a number) or "legacy" (Molmo-1's "... the total number is: N.")."""

    form: str
    value: int
    offset: int


@dataclass(frozen=True)
class PointingOutput:
    text: str
    elements: tuple[PointingElement, ...]
    statement: CountStatement | None

    @property
    def points(self) -> tuple[Point, ...]:
        return tuple(p for e in self.elements for p in e.points)

    @property
    def frames(self) -> tuple[Frame, ...]:
        return tuple(f for e in self.elements for f in e.frames)

    @property
    def stated_count(self) -> int | None:
        return None if self.statement is None else self.statement.value

    @property
    def point_count(self) -> int:
        """Objects the elements mark: points, or distinct track ids per `<tracks>` element."""
        return sum(e.count for e in self.elements)

    @property
    def count(self) -> int | None:
        """The answer's count: the stated N if any, else the number of marked objects, else None
        (text that neither points nor states a count)."""
        if self.statement is not None:
            return self.statement.value
        return self.point_count if self.elements else None

    @property
    def count_mismatch(self) -> bool:
        """True when a stated count disagrees with the points next to it. A statement without any
        element ("count" mode, or "Counting the dogs shows a total of 3.") is not a mismatch."""
        return self.statement is not None and bool(self.elements) and self.statement.value != self.point_count


@dataclass(frozen=True)
class Video:
    """A video's frame size and, optionally, the times (seconds) of the frames Molmo2 was shown.

    With `timestamps`, each output timestamp maps to the nearest sampled frame (`Frame.frame_index`);
    a timestamp farther than `tolerance` seconds from every sampled frame is refused. The default
    tolerance is half the largest gap between sampled frames, and at least 0.05 s (Molmo2 writes
    times with one decimal), so in practice only times outside the video are refused.
    """

    width: float
    height: float
    timestamps: Sequence[float] | None = None
    frame_numbers: Sequence[int] | None = None  # source-video frame number of each sampled frame
    tolerance: float | None = None

    def __post_init__(self) -> None:
        _check_size((self.width, self.height))
        if self.timestamps is not None:
            object.__setattr__(self, "timestamps", tuple(float(t) for t in self.timestamps))
            if not self.timestamps:
                raise ValueError("Video.timestamps is empty; pass None when the frame times are unknown")
        if self.frame_numbers is not None:
            object.__setattr__(self, "frame_numbers", tuple(int(i) for i in self.frame_numbers))
            if self.timestamps is None or len(self.frame_numbers) != len(self.timestamps):
                raise ValueError("Video.frame_numbers needs timestamps of the same length")

    @classmethod
    def from_frames_indices(cls, width: float, height: float, frames_indices: Sequence[int], fps: float,
                            tolerance: float | None = None) -> Video:
        """From vLLM/Molmo2 video metadata: frame i is shown at frames_indices[i] / fps seconds,
        as molmo2_shim.processing.video computes the timestamps it puts in the prompt."""
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        return cls(width, height, tuple(i / fps for i in frames_indices), tuple(frames_indices), tolerance)

    def _tolerance(self) -> float:
        if self.tolerance is not None:
            return self.tolerance
        stamps = sorted(self.timestamps or ())
        gap = max((b - a for a, b in zip(stamps, stamps[1:])), default=0.0)
        return max(0.05, gap / 2) + 1e-6  # 1e-6: "0.1" vs 0.15 must not fail on float noise

    def frame_for(self, t: float) -> tuple[int, int | None] | None:
        """(index of the nearest sampled frame, its source frame number), or None when t is farther
        than the tolerance from every sampled frame. Requires `timestamps`."""
        assert self.timestamps is not None
        i = min(range(len(self.timestamps)), key=lambda k: (abs(self.timestamps[k] - t), k))
        if abs(self.timestamps[i] - t) > self._tolerance():
            return None
        return i, (None if self.frame_numbers is None else self.frame_numbers[i])


# ----------------------------------------------------------------------------------------------
# Parsing

_TAG = re.compile(r"<(/?)(points|tracks|point)(?=[\s/>]|$)")
_ATTR_START = re.compile(r"([A-Za-z_][\w\-]*)=\"")
_COORD_CHARS = re.compile(r"[^0-9\t:;, .]")  # what AllenAI's coords regex allows
_FRAME_SEP = re.compile(r"[\t:;,]")
_TOKEN = re.compile(r"[^ ]+")
_INT = re.compile(r"[0-9]+")
_DECIMAL = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_LEGACY_VALUE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*")
_LEGACY_KEY = re.compile(r"([xy])([0-9]*)")

# Count statements, searched outside the tags. Molmo2's build_point_output writes the first three;
# "legacy" covers Molmo-1's video wrappers.
_COUNT_PATTERNS = (
    ("point_then_count", re.compile(r"\bshows a total of ([0-9]+)\b")),
    ("count_then_point", re.compile(r"\bThere are ([0-9]+)\b")),
    ("none", re.compile(r"\bThere are none\b")),
    ("legacy", re.compile(r"\btotal number (?:is|of \"[^\"]*\" is): ([0-9]+)\b")),
)
_BARE_COUNT = re.compile(r"\s*([0-9]+)\s*\.?\s*")


@dataclass
class _Context:
    text: str
    sizes: list[Size] | None  # image sizes (None: video or no size given)
    multi_image: bool
    video: Video | None


def _check_size(size: object) -> Size:
    if (not isinstance(size, (tuple, list)) or len(size) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in size)):
        raise ValueError(f"an image size must be a (width, height) pair of positive numbers, got {size!r}")
    return float(size[0]), float(size[1])


def _normalise_sizes(image_sizes: ImageSizes | None) -> tuple[list[Size] | None, bool]:
    if image_sizes is None:
        return None, False
    if (isinstance(image_sizes, (tuple, list)) and len(image_sizes) == 2
            and all(isinstance(v, (int, float)) for v in image_sizes)):
        return [_check_size(image_sizes)], False  # one image: (W, H)
    if not isinstance(image_sizes, Sequence) or not image_sizes:
        raise ValueError(f"image_sizes must be (width, height) or a non-empty list of them, got {image_sizes!r}")
    return [_check_size(s) for s in image_sizes], True


def parse_points(text: str, image_sizes: ImageSizes | None = None, *, video: Video | None = None,
                 syntax: Syntax = "auto", strict: bool = False) -> PointingOutput:
    """Parse every pointing/tracking element and the count statement of a Molmo2 answer.

    image_sizes: (width, height) of the single prompt image, or a list of them for a multi-image
        prompt (the output's frame field is then the 1-based image index into this list).
    video: the video's frame size and, optionally, its sampled frames' timestamps.
        Give at most one of image_sizes and video. With neither, points get no pixel values
        (x, y are None), integer frame fields read as image indices and decimals as timestamps.
    syntax: "auto" reads Molmo2 (`coords="..."`, 0-1000) and Molmo-1 legacy tags (x/y attributes,
        0-100) alike; "molmo2" or "legacy" refuses the other.
    strict: also refuse a stated count that disagrees with the points (by default it is only
        reported, as `PointingOutput.count_mismatch`).

    Raises PointingFormatError for malformed output; ValueError for bad arguments.
    """
    if syntax not in ("auto", "molmo2", "legacy"):
        raise ValueError(f"syntax must be 'auto', 'molmo2' or 'legacy', got {syntax!r}")
    if image_sizes is not None and video is not None:
        raise ValueError("give image_sizes or video, not both")
    sizes, multi = _normalise_sizes(image_sizes)
    ctx = _Context(text, sizes, multi, video)

    elements: list[PointingElement] = []
    pos = 0
    while (m := _TAG.search(text, pos)) is not None:
        if m.group(1):
            raise PointingFormatError(f"closing </{m.group(2)}> without an opening tag", text, m.start())
        element = _parse_element(ctx, m, syntax)
        elements.append(element)
        pos = element.end

    # Blank the elements out (keeping offsets) so digits or words inside labels are not read as counts.
    masked = list(text)
    for e in elements:
        masked[e.offset : e.end] = " " * (e.end - e.offset)
    statement = _count_statement("".join(masked), text)
    out = PointingOutput(text, tuple(elements), statement)
    if strict and out.count_mismatch:
        assert statement is not None
        raise PointingFormatError(
            f"the text states a count of {statement.value} but marks {out.point_count} object(s)", text, statement.offset)
    return out


def _count_statement(masked: str, text: str) -> CountStatement | None:
    found: list[CountStatement] = []
    for form, pattern in _COUNT_PATTERNS:
        for m in pattern.finditer(masked):
            found.append(CountStatement(form, 0 if form == "none" else int(m.group(1)), m.start()))
    if not found and (m := _BARE_COUNT.fullmatch(masked)) is not None:
        found.append(CountStatement("count", int(m.group(1)), m.start(1)))
    found.sort(key=lambda s: s.offset)
    for s in found[1:]:
        if s.value != found[0].value:
            raise PointingFormatError(f"conflicting counts: {found[0].value} and {s.value}", text, s.offset)
    return found[0] if found else None


def _parse_open_tag(text: str, i: int, name: str, start: int) -> tuple[dict[str, tuple[str, int]], int, bool]:
    """Attributes (name -> (value, offset of value)) of the tag opened at `start`; where the
    tag ends; whether it closes itself (`/>`)."""
    attrs: dict[str, tuple[str, int]] = {}
    n = len(text)
    while True:
        while i < n and text[i].isspace():
            i += 1
        if i >= n:
            raise PointingFormatError(f"unclosed <{name}> tag: no '>' before the end of the text", text, start)
        if text.startswith("/>", i):
            return attrs, i + 2, True
        if text[i] == ">":
            return attrs, i + 1, False
        m = _ATTR_START.match(text, i)
        if m is None:
            raise PointingFormatError(
                f'malformed attribute in <{name}> tag: expected name="value" '
                "(compact legacy formats such as <points label\\t-\\t...> are not supported)", text, i)
        key = m.group(1)
        close = text.find('"', m.end())
        value = text[m.end() : close] if close >= 0 else ""
        if close < 0 or "<" in value or ">" in value:
            raise PointingFormatError(f"unclosed quote in attribute {key} of <{name}>", text, m.end() - 1)
        if key in attrs:
            raise PointingFormatError(f"attribute {key} repeated in <{name}>", text, i)
        attrs[key] = (value, m.end())
        i = close + 1


def _parse_element(ctx: _Context, m: re.Match[str], syntax: Syntax) -> PointingElement:
    text, name, start = ctx.text, m.group(2), m.start()
    attrs, body_start, self_closing = _parse_open_tag(text, m.end(), name, start)
    if self_closing:
        # AllenAI's extractor also reads <points label="..." coords="..."/>.
        label, end = attrs.get("label", ("", 0))[0], body_start
    else:
        close = text.find(f"</{name}>", body_start)
        following = _TAG.search(text, body_start)
        if close < 0:
            raise PointingFormatError(f"unclosed <{name}> element: no </{name}> after it", text, start)
        if following is not None and following.start() < close:
            raise PointingFormatError(
                f"unclosed <{name}> element: a {following.group()} tag at character {following.start()} comes before its </{name}>",
                text, start)
        label, end = text[body_start:close], close + len(name) + 3
    alt = attrs["alt"][0] if "alt" in attrs else None

    legacy_keys = [k for k in attrs if _LEGACY_KEY.fullmatch(k)]
    if "coords" in attrs:
        if legacy_keys:
            raise PointingFormatError(f"<{name}> has both coords and legacy {legacy_keys[0]} attributes", text, start)
        if name == "point":
            raise PointingFormatError("<point coords=...> is not a Molmo2 tag: Molmo2 writes <points coords=...>", text, start)
        if syntax == "legacy":
            raise PointingFormatError(f"Molmo2 <{name} coords=...> element, but syntax='legacy'", text, start)
        value, voff = attrs["coords"]
        frames, sep = _parse_coords(ctx, value, voff)
        return PointingElement(name, "molmo2", label, alt, frames, MOLMO2_SCALE, start, end, sep)  # type: ignore[arg-type]

    if name == "tracks":
        raise PointingFormatError("<tracks> without a coords attribute", text, start)
    if not legacy_keys:
        raise PointingFormatError(f"<{name}> has neither coords (Molmo2) nor x/y attributes (Molmo-1)", text, start)
    if syntax == "molmo2":
        raise PointingFormatError(f"legacy Molmo-1 <{name} x.. y..> element, but syntax='molmo2'", text, start)
    frame = _parse_legacy(ctx, name, attrs, start)
    return PointingElement(name, "legacy", label, alt, (frame,), LEGACY_SCALE, start, end, None)  # type: ignore[arg-type]


def _pixels(ctx: _Context, size: Size | None, xn: float, yn: float, scale: int) -> tuple[float | None, float | None]:
    if size is None:
        return None, None
    # x_norm * W / scale rather than x_norm / scale * W: exact for the usual integer sizes (990*640/1000 = 633.6).
    return xn * size[0] / scale, yn * size[1] / scale


def _parse_coords(ctx: _Context, value: str, voff: int) -> tuple[tuple[Frame, ...], str | None]:
    text = ctx.text
    if (bad := _COORD_CHARS.search(value)) is not None:
        raise PointingFormatError(f"non-numeric character {bad.group()!r} in coords", text, voff + bad.start())
    pieces: list[tuple[int, str]] = []
    seps: list[str] = []
    start = 0
    for s in _FRAME_SEP.finditer(value):
        pieces.append((start, value[start : s.start()]))
        seps.append(s.group())
        start = s.end()
    pieces.append((start, value[start:]))

    frames: list[Frame] = []
    kinds: set[str] = set()
    seen_fields: dict[float, int] = {}
    for pstart, piece in pieces:
        tokens = [(voff + pstart + t.start(), t.group()) for t in _TOKEN.finditer(piece)]
        if not tokens:
            raise PointingFormatError("empty frame in coords (two separators in a row, or one at an end)", text, voff + pstart)
        frame = _parse_frame(ctx, tokens, kinds)
        key = frame.image_index if frame.image_index is not None else frame.timestamp
        assert key is not None
        if key in seen_fields:
            what = "image index" if frame.image_index is not None else "timestamp"
            raise PointingFormatError(f"{what} {tokens[0][1]} appears twice in one element", text, tokens[0][0])
        seen_fields[key] = tokens[0][0]
        frames.append(frame)
    return tuple(frames), (seps[0] if seps else None)


def _parse_frame(ctx: _Context, tokens: list[tuple[int, str]], kinds: set[str]) -> Frame:
    text = ctx.text
    foff, field = tokens[0]
    image_index = timestamp = frame_index = video_frame = None
    size: Size | None = None
    if ctx.video is not None:
        if not _DECIMAL.fullmatch(field):
            raise PointingFormatError(f"timestamp {field!r} is not a number of seconds", text, foff)
        timestamp = float(field)
        size = (float(ctx.video.width), float(ctx.video.height))
        if ctx.video.timestamps is not None:
            found = ctx.video.frame_for(timestamp)
            if found is None:
                raise PointingFormatError(
                    f"timestamp {field} is not the time of any sampled frame "
                    f"({min(ctx.video.timestamps):g}..{max(ctx.video.timestamps):g} s)", text, foff)
            frame_index, video_frame = found
    elif ctx.sizes is not None:
        if not _INT.fullmatch(field):
            raise PointingFormatError(
                f"image index {field!r} is not a positive integer (timestamps need video=..., not image_sizes)", text, foff)
        image_index = int(field)
        if not 1 <= image_index <= len(ctx.sizes):
            raise PointingFormatError(
                f"image index {image_index} beyond the {len(ctx.sizes)} image(s) given (indices are 1-based)", text, foff)
        size = ctx.sizes[image_index - 1]
    else:
        # No sizes: "%.1f" timestamps always have a decimal point, image indices never do.
        kind = "image" if _INT.fullmatch(field) else "time" if _DECIMAL.fullmatch(field) else None
        if kind is None:
            raise PointingFormatError(f"frame field {field!r} is neither an image index nor a timestamp", text, foff)
        if kinds and kind not in kinds:
            raise PointingFormatError("an element mixes image indices and timestamps", text, foff)
        kinds.add(kind)
        if kind == "image":
            image_index = int(field)
            if image_index < 1:
                raise PointingFormatError(f"image index {image_index} is not 1-based", text, foff)
        else:
            timestamp = float(field)

    values = tokens[1:]
    if not values:
        raise PointingFormatError(f"frame {field} has no points", text, foff)
    if len(values) % 3:
        last = values[len(values) - len(values) % 3]
        raise PointingFormatError(
            f"incomplete point: {len(values) % 3} value(s) where an (object id, x, y) triple is expected", text, last[0])
    points: list[Point] = []
    ids: set[int] = set()
    for k in range(0, len(values), 3):
        (ioff, id_str), (xoff, xs), (yoff, ys) = values[k : k + 3]
        if not _INT.fullmatch(id_str):
            raise PointingFormatError(f"object id {id_str!r} is not an integer", text, ioff)
        object_id = int(id_str)
        if object_id in ids:
            raise PointingFormatError(f"object id {object_id} appears twice in frame {field}", text, ioff)
        ids.add(object_id)
        xn = _molmo2_coordinate(text, "x", xs, xoff)
        yn = _molmo2_coordinate(text, "y", ys, yoff)
        x, y = _pixels(ctx, size, xn, yn, MOLMO2_SCALE)
        points.append(Point(object_id, x, y, xn, yn, MOLMO2_SCALE, ioff))
    return Frame(tuple(points), image_index, timestamp, frame_index, video_frame, size, foff)


def _molmo2_coordinate(text: str, axis: str, s: str, offset: int) -> float:
    if not _INT.fullmatch(s):
        raise PointingFormatError(f"{axis} {s!r} is not an integer on Molmo2's 0-1000 scale", text, offset)
    v = int(s)
    if v > MOLMO2_SCALE:
        raise PointingFormatError(f"{axis} {s} is outside the 0-1000 coordinate scale", text, offset)
    if len(s) < 3:
        # Molmo2 always writes "%03d" ("010"); a short number means the model broke the format.
        raise PointingFormatError(f"{axis} {s!r} has fewer than 3 digits (Molmo2 writes %03d, e.g. '010')", text, offset)
    return float(v)


def _parse_legacy(ctx: _Context, name: str, attrs: dict[str, tuple[str, int]], start: int) -> Frame:
    text = ctx.text
    if ctx.video is not None:
        raise PointingFormatError(f"legacy <{name}> element has no timestamps; it cannot be read for a video", text, start)
    if ctx.sizes is not None and len(ctx.sizes) > 1:
        raise PointingFormatError(f"legacy <{name}> element has no image index; it cannot be read for several images",
                                  text, start)
    size = ctx.sizes[0] if ctx.sizes else None
    by_id: dict[str, dict[str, tuple[str, int]]] = {}
    for key, (value, voff) in attrs.items():
        if (km := _LEGACY_KEY.fullmatch(key)) is not None:
            by_id.setdefault(km.group(2), {})[km.group(1)] = (value, voff)
    if name == "point" and set(by_id) != {""}:
        raise PointingFormatError("<point> needs exactly the attributes x and y", text, start)
    if name == "points" and "" in by_id:
        raise PointingFormatError("legacy <points> numbers its attributes (x1, y1, x2, ...); found a bare x/y", text, start)
    points = []
    for suffix in sorted(by_id, key=lambda s: int(s) if s else 1):
        pair = by_id[suffix]
        for axis, other in (("x", "y"), ("y", "x")):
            if axis not in pair:
                raise PointingFormatError(f"{other}{suffix} has no matching {axis}{suffix}", text, pair[other][1])
        xn = _legacy_coordinate(text, "x" + suffix, *pair["x"])
        yn = _legacy_coordinate(text, "y" + suffix, *pair["y"])
        x, y = _pixels(ctx, size, xn, yn, LEGACY_SCALE)
        points.append(Point(int(suffix) if suffix else 1, x, y, xn, yn, LEGACY_SCALE, pair["x"][1]))
    return Frame(tuple(points), 1, None, None, None, size, start)


def _legacy_coordinate(text: str, key: str, value: str, offset: int) -> float:
    m = _LEGACY_VALUE.fullmatch(value)
    if m is None:
        raise PointingFormatError(f"{key}={value!r} is not a number", text, offset)
    v = float(m.group(1))
    if v > LEGACY_SCALE:
        raise PointingFormatError(f"{key}={m.group(1)} is outside the legacy 0-100 coordinate scale", text, offset)
    return v


# ----------------------------------------------------------------------------------------------
# Rewards. Policy: malformed model output scores 0.0 and never raises (an exception in a reward
# function fails the whole rollout batch); wrong arguments from the caller still raise ValueError,
# since those are bugs in the training script, not in the model.

MismatchPolicy = Literal["zero", "stated", "points"]


def count_reward(text: str, expected_count: int, *, on_mismatch: MismatchPolicy = "zero",
                 image_sizes: ImageSizes | None = None, video: Video | None = None) -> float:
    """1.0 when the answer's count equals expected_count, else 0.0.

    The count is the stated N ("... shows a total of N.", "There are N ...", "There are none." = 0,
    a bare number), or the number of marked objects when no count is stated. Text that neither
    points nor states a count scores 0.0, even for expected_count 0 (Molmo2 says "There are none.").
    When the stated N disagrees with the points, on_mismatch decides: "zero" (default: an
    inconsistent answer earns nothing, so the policy cannot learn to state a number it did not
    point to), "stated" (score N) or "points" (score the number of points).
    image_sizes/video are optional; given, they also validate image indices and timestamps.
    """
    if on_mismatch not in ("zero", "stated", "points"):
        raise ValueError(f"on_mismatch must be 'zero', 'stated' or 'points', got {on_mismatch!r}")
    try:
        out = parse_points(text, image_sizes, video=video)
    except PointingFormatError:
        return 0.0
    count = out.count
    if out.count_mismatch:
        if on_mismatch == "zero":
            return 0.0
        count = out.stated_count if on_mismatch == "stated" else out.point_count
    return 1.0 if count is not None and count == expected_count else 0.0


def _max_matching(adj: Sequence[Sequence[int]], n_right: int) -> int:
    """Size of a maximum bipartite matching (Kuhn's augmenting paths), iterative so that a
    degenerate answer with thousands of points cannot hit Python's recursion limit."""
    match_right = [-1] * n_right
    matched = 0
    # `seen` is only reset after an augmentation: right vertices a failed search visited cannot
    # reach a free vertex until the matching changes. That bounds the work by (boxes + 1) passes
    # over the edges, however many points a degenerate answer lists.
    seen = [False] * n_right
    for root in range(len(adj)):
        if matched == n_right:
            break
        stack: list[list[int]] = [[root, 0]]  # [left vertex, next edge to try]
        via: list[int] = []  # via[k]: the right vertex through which stack[k + 1] was reached
        while stack:
            top = stack[-1]
            u, k = top
            if k >= len(adj[u]):
                stack.pop()
                if via:
                    via.pop()
                continue
            top[1] += 1
            v = adj[u][k]
            if seen[v]:
                continue
            seen[v] = True
            via.append(v)
            if match_right[v] < 0:
                for (left, _), right in zip(stack, via):  # flip the augmenting path
                    match_right[right] = left
                matched += 1
                seen = [False] * n_right
                break
            stack.append([match_right[v], 0])
    return matched


def _score(tp: int, n_pred: int, n_true: int, metric: str) -> float:
    if n_pred == 0 and n_true == 0:
        return 1.0  # nothing to find, nothing claimed ("There are none." for an empty scene)
    if n_pred == 0 or n_true == 0:
        return 0.0
    precision, recall = tp / n_pred, tp / n_true
    if metric == "precision":
        return precision
    if metric == "recall":
        return recall
    return 0.0 if tp == 0 else 2 * precision * recall / (precision + recall)


def _check_metric(metric: str) -> None:
    if metric not in ("f1", "precision", "recall"):
        raise ValueError(f"metric must be 'f1', 'precision' or 'recall', got {metric!r}")


def points_in_boxes_reward(text: str, boxes: Sequence[Box] | Mapping[int, Sequence[Box]], image_sizes: ImageSizes, *,
                           metric: Literal["f1", "precision", "recall"] = "f1", on_mismatch: Literal["zero", "ignore"] = "zero"
                           ) -> float:
    """Score predicted points against ground-truth pixel boxes (x0, y0, x1, y1; edges inclusive).

    boxes: a list for a single image, or {1-based image index: list} for a multi-image prompt.
    Each box counts at most once and each point at most once: points and boxes are matched
    one-to-one (maximum matching; a point inside two overlapping boxes takes either), per image.
    With tp matched pairs: precision = tp / points, recall = tp / boxes, f1 their harmonic mean.
    No points and no boxes scores 1.0; exactly one of them empty scores 0.0.
    Malformed output scores 0.0; so does a stated count that disagrees with the points unless
    on_mismatch="ignore".
    """
    _check_metric(metric)
    if on_mismatch not in ("zero", "ignore"):
        raise ValueError(f"on_mismatch must be 'zero' or 'ignore', got {on_mismatch!r}")
    by_image: dict[int, list[Box]] = {}
    items = boxes.items() if isinstance(boxes, Mapping) else [(1, boxes)]
    for index, bs in items:
        by_image[int(index)] = [(min(b[0], b[2]), min(b[1], b[3]), max(b[0], b[2]), max(b[1], b[3])) for b in bs]
    try:
        out = parse_points(text, image_sizes)
    except PointingFormatError:
        return 0.0
    if out.count_mismatch and on_mismatch == "zero":
        return 0.0
    predicted: dict[int, list[Point]] = {}
    for frame in out.frames:
        assert frame.image_index is not None
        predicted.setdefault(frame.image_index, []).extend(frame.points)
    tp = 0
    for index, points in predicted.items():
        bs = by_image.get(index, [])
        adj = [[j for j, (x0, y0, x1, y1) in enumerate(bs) if x0 <= p.x <= x1 and y0 <= p.y <= y1]  # type: ignore[operator]
               for p in points]
        tp += _max_matching(adj, len(bs))
    n_true = sum(len(bs) for bs in by_image.values())
    return _score(tp, len(out.points), n_true, metric)


def track_reward(text: str, expected: Mapping[Hashable, Mapping[float, tuple[float, float]]], video: Video, *,
                 radius: float, metric: Literal["f1", "precision", "recall"] = "f1") -> float:
    """Identity-aware tracking score.

    expected: {object key: {timestamp in seconds: (x, y) in pixels}}. A predicted point is a hit
    when it lies within `radius` pixels of its object's true position in the same frame. Predicted
    track ids are matched one-to-one to true objects, greedily by the number of hits each pair
    would score, so a track that switches identity mid-video only keeps the hits of one object.
    With tp hits after matching: precision = tp / predicted points, recall = tp / true points.
    Frames are compared by sampled-frame index when `video.timestamps` is given, else by the
    time rounded to 0.1 s (Molmo2's precision). Every element (<tracks> or <points>) counts, each
    with its own ids. Malformed output scores 0.0.
    """
    _check_metric(metric)
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")

    def frame_key(t: float) -> float:
        if video.timestamps is None:
            return round(t, 1)
        found = video.frame_for(t)
        if found is None:
            raise ValueError(f"expected timestamp {t} is not the time of any sampled frame of the video")
        return float(found[0])

    truth: dict[Hashable, dict[float, tuple[float, float]]] = {
        obj: {frame_key(float(t)): (float(x), float(y)) for t, (x, y) in steps.items()} for obj, steps in expected.items()}
    try:
        out = parse_points(text, video=video)
    except PointingFormatError:
        return 0.0
    predicted: dict[tuple[int, int], dict[float, Point]] = {}
    for e_index, element in enumerate(out.elements):
        for frame in element.frames:
            assert frame.timestamp is not None
            key = float(frame.frame_index) if frame.frame_index is not None else round(frame.timestamp, 1)
            for p in frame.points:
                predicted.setdefault((e_index, p.object_id), {})[key] = p

    hits: list[tuple[int, int, int, Hashable]] = []  # (-hits, pred order, true order) sorts greedily
    true_keys = list(truth)
    for pi, (pred_key, steps) in enumerate(predicted.items()):
        for ti, obj in enumerate(true_keys):
            n = sum(1 for f, p in steps.items() if f in truth[obj]
                    and (p.x - truth[obj][f][0]) ** 2 + (p.y - truth[obj][f][1]) ** 2 <= radius**2)  # type: ignore[operator]
            if n:
                hits.append((-n, pi, ti, pred_key))
    used_pred: set[int] = set()
    used_true: set[int] = set()
    tp = 0
    for neg, pi, ti, _ in sorted(hits, key=lambda h: h[:3]):
        if pi not in used_pred and ti not in used_true:
            used_pred.add(pi)
            used_true.add(ti)
            tp -= neg
    n_pred = sum(len(s) for s in predicted.values())
    n_true = sum(len(s) for s in truth.values())
    return _score(tp, n_pred, n_true, metric)
