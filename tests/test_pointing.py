"""molmo2_shim.pointing: Molmo2's pointing/counting/tracking output parsed to pixels, malformed
output refused, and the RL reward helpers. Needs only the package (no torch, no vLLM).

Expected pixel values are computed by hand in the comments: pixel = value / 1000 * size for
Molmo2's coords, value / 100 * size for the legacy Molmo-1 tags. Several inputs are AllenAI's
own test expectations (allenai/molmo2, tests/preprocessing/test_point_formatter.py), i.e.
strings the original formatter writes.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from molmo2_shim.pointing import (
    PointingFormatError,
    Video,
    count_reward,
    parse_points,
    points_in_boxes_reward,
    track_reward,
)

approx = pytest.approx


def xy(points):
    return [(p.x, p.y) for p in points]


# ---------------------------------------------------------------------------------------------
# Molmo2 format, images


def test_allenai_single_point_image():
    text = 'Counting the <points coords="1 1 990 800">label</points> shows a total of 1.'
    out = parse_points(text, (640, 480))
    (element,) = out.elements
    assert (element.tag, element.syntax, element.label, element.alt, element.scale) == ("points", "molmo2", "label", None, 1000)
    (frame,) = element.frames
    assert frame.image_index == 1 and frame.timestamp is None and frame.size == (640, 480)
    (p,) = frame.points
    # 990/1000*640 = 633.6, 800/1000*480 = 384.0
    assert (p.object_id, p.x, p.y, p.x_norm, p.y_norm) == (1, approx(633.6), approx(384.0), 990, 800)
    assert p.offset == text.index("1 990")
    assert (out.stated_count, out.statement.form, out.point_count, out.count, out.count_mismatch) == (1, "point_then_count", 1, 1, False)


def test_allenai_two_points_image():
    out = parse_points('Counting the <points coords="1 1 900 400 2 911 800">aasdf</points> shows a total of 2.', (200, 100))
    # 900/1000*200 = 180, 400/1000*100 = 40; 911/1000*200 = 182.2, 800/1000*100 = 80
    assert xy(out.points) == [(approx(180.0), approx(40.0)), (approx(182.2), approx(80.0))]
    assert [p.object_id for p in out.points] == [1, 2]
    assert out.count == 2 and not out.count_mismatch


def test_allenai_extract_points_example_and_no_sizes():
    text = '<points coords="1 1 900 700 2 900 800">tmp</points>'
    # AllenAI's expectation for (100, 50): 900/1000*100 = 90, 700/1000*50 = 35, 800/1000*50 = 40
    assert xy(parse_points(text, (100, 50)).points) == [(approx(90.0), approx(35.0)), (approx(90.0), approx(40.0))]
    out = parse_points(text)  # no size: normalised values only
    assert xy(out.points) == [(None, None), (None, None)]
    assert [(p.x_norm, p.y_norm) for p in out.points] == [(900, 700), (900, 800)]
    assert out.frames[0].image_index == 1 and out.statement is None and out.count == 2


def test_multi_image_indices_are_one_based():
    text = '<points coords="1 1 500 500;2 2 250 750 3 100 100">cats</points>'
    out = parse_points(text, [(640, 480), (1000, 2000)])
    first, second = out.frames
    assert (first.image_index, first.size, second.image_index, second.size) == (1, (640, 480), 2, (1000, 2000))
    # image 1: 500/1000*640 = 320, 500/1000*480 = 240
    assert xy(first.points) == [(approx(320.0), approx(240.0))]
    # image 2: 250/1000*1000 = 250, 750/1000*2000 = 1500; 100/1000*1000 = 100, 100/1000*2000 = 200
    assert xy(second.points) == [(approx(250.0), approx(1500.0)), (approx(100.0), approx(200.0))]
    assert out.point_count == 3 and out.elements[0].separator == ";"


def test_coordinate_1000_is_the_far_edge():
    # round(1000 * W / W) = 1000 is the one 4-digit value Molmo2 writes: 1000/1000*640 = 640, 0/1000*480 = 0
    out = parse_points('<points coords="1 1 1000 000">edge</points>', (640, 480))
    assert xy(out.points) == [(approx(640.0), approx(0.0))]


def test_several_elements_with_alt_text():
    text = 'A <points coords="1 1 100 200">cup</points> and a <points alt="a brown dog" coords="1 1 300 400">dog</points>.'
    out = parse_points(text, (1000, 500))
    cup, dog = out.elements
    assert (cup.label, cup.alt, dog.label, dog.alt) == ("cup", None, "dog", "a brown dog")
    # 100/1000*1000 = 100, 200/1000*500 = 100; 300/1000*1000 = 300, 400/1000*500 = 200
    assert xy(cup.points) == [(approx(100.0), approx(100.0))] and xy(dog.points) == [(approx(300.0), approx(200.0))]
    assert cup.offset == 2 and text[cup.end :].startswith(" and") and out.count == 2


# ---------------------------------------------------------------------------------------------
# Counting wrappers


def test_count_then_point_wrapper():
    out = parse_points('There are 2 <points coords="1 1 250 250 2 750 750">apples</points>.', (400, 200))
    # 250/1000*400 = 100, 250/1000*200 = 50; 750/1000*400 = 300, 750/1000*200 = 150
    assert xy(out.points) == [(approx(100.0), approx(50.0)), (approx(300.0), approx(150.0))]
    assert (out.statement.form, out.stated_count, out.count_mismatch) == ("count_then_point", 2, False)


def test_there_are_none():
    out = parse_points("There are none.", (640, 480))
    assert (out.elements, out.statement.form, out.stated_count, out.count, out.count_mismatch) == ((), "none", 0, 0, False)


def test_bare_count_answer():
    out = parse_points(" 3.")
    assert (out.statement.form, out.count, out.point_count) == ("count", 3, 0)


def test_no_points_no_count():
    out = parse_points("I cannot see any dogs in this picture.")
    assert out.elements == () and out.statement is None and out.count is None


@pytest.mark.parametrize(
    "text, stated, marked",
    [
        ('Counting the <points coords="1 1 100 100">x</points> shows a total of 3.', 3, 1),
        ('There are none. <points coords="1 1 100 100">x</points>', 0, 1),
        ('There are 1 <points coords="1 1 100 100 2 200 200">x</points>.', 1, 2),
    ],
)
def test_count_mismatch_reported_or_refused_when_strict(text, stated, marked):
    out = parse_points(text, (100, 100))
    assert out.count_mismatch and (out.stated_count, out.point_count, out.count) == (stated, marked, stated)
    with pytest.raises(PointingFormatError, match=f"states a count of {stated} but marks {marked}"):
        parse_points(text, (100, 100), strict=True)


def test_count_words_inside_labels_are_not_counts():
    out = parse_points('<points coords="1 1 100 100">There are 7 ducks</points>', (100, 100))
    assert out.statement is None and out.elements[0].label == "There are 7 ducks"


# ---------------------------------------------------------------------------------------------
# Video points and tracks


def test_allenai_video_one_frame():
    out = parse_points('Counting the <points coords="0.1 1 900 400 2 911 800">aasdf</points> shows a total of 2.', video=Video(640, 360))
    (frame,) = out.frames
    assert frame.timestamp == 0.1 and frame.image_index is None and frame.frame_index is None
    # 900/1000*640 = 576, 400/1000*360 = 144; 911/1000*640 = 583.04, 800/1000*360 = 288
    assert xy(frame.points) == [(approx(576.0), approx(144.0)), (approx(583.04), approx(288.0))]
    assert out.count == 2 and not out.count_mismatch


@pytest.mark.parametrize("sep", ["\t", ";", ":", ","], ids=["tab-html-v1", "semicolon-html-v2", "colon", "comma"])
def test_video_two_frames_every_separator(sep):
    text = f'Counting the <points coords="0.1 1 911 800{sep}0.2 2 900 400">aasdf</points> shows a total of 2.'
    # frames_indices [1, 2] at 10 fps: frames shown at 1/10 = 0.1 s and 2/10 = 0.2 s
    out = parse_points(text, video=Video.from_frames_indices(640, 360, [1, 2], fps=10))
    f1, f2 = out.frames
    assert [(f.timestamp, f.frame_index, f.video_frame) for f in out.frames] == [(0.1, 0, 1), (0.2, 1, 2)]
    # 911/1000*640 = 583.04, 800/1000*360 = 288; 900/1000*640 = 576, 400/1000*360 = 144
    assert xy(f1.points) == [(approx(583.04), approx(288.0))] and xy(f2.points) == [(approx(576.0), approx(144.0))]
    assert out.elements[0].separator == sep and out.count == 2


def test_allenai_self_closing_points_with_label_attribute():
    out = parse_points('<points label="aasdf" coords="0.1 1 900 400 2 911 800\t0.2 3 911 600"/>', video=Video(1000, 1000))
    assert out.elements[0].label == "aasdf"
    # 1000x1000 frames: pixels equal the 0-1000 values
    assert [(f.timestamp, xy(f.points)) for f in out.frames] == [
        (0.1, [(900.0, 400.0), (911.0, 800.0)]), (0.2, [(911.0, 600.0)])]


def test_timestamps_map_to_the_nearest_sampled_frame():
    # frames_indices [0, 1, 2, 3] at 3 fps: 0, 0.333, 0.667, 1.0 s; Molmo2 writes "%.1f": 0.3, 0.7
    video = Video.from_frames_indices(300, 300, [0, 1, 2, 3], fps=3)
    out = parse_points('<points coords="0.3 1 100 100;0.7 2 200 200;1.0 3 300 300">x</points>', video=video)
    assert [(f.frame_index, f.video_frame) for f in out.frames] == [(1, 1), (2, 2), (3, 3)]
    # 15 fps source, every 15th frame kept: 0, 0.5, 1.0, 1.5 s
    video = Video.from_frames_indices(300, 300, [0, 15, 30, 45], fps=30)
    out = parse_points('<points coords="0.5 1 100 100;1.5 2 200 200">x</points>', video=video)
    assert [(f.frame_index, f.video_frame) for f in out.frames] == [(1, 15), (3, 45)]


def test_allenai_single_object_track():
    text = '<tracks coords="0.0 1 259 340\t1.0 1 138 427\t2.0 1 248 335">debug</tracks>'
    out = parse_points(text, video=Video(1920, 1080, timestamps=[0.0, 0.5, 1.0, 1.5, 2.0]))
    (element,) = out.elements
    assert element.is_track and element.tag == "tracks" and element.separator == "\t"
    assert [f.frame_index for f in element.frames] == [0, 2, 4]
    # 259/1000*1920 = 497.28, 340/1000*1080 = 367.2; 138/1000*1920 = 264.96, 427/1000*1080 = 461.16;
    # 248/1000*1920 = 476.16, 335/1000*1080 = 361.8
    assert xy(element.points) == [(approx(497.28), approx(367.2)), (approx(264.96), approx(461.16)), (approx(476.16), approx(361.8))]
    assert element.count == 1 and out.count == 1 and list(element.tracks()) == [1]


def test_allenai_two_object_track():
    out = parse_points('<tracks coords="0.0 1 010 020 2 010 030\t5.0 1 100 100 2 200 200">debug</tracks>', video=Video(500, 200))
    f0, f5 = out.frames
    # 010/1000*500 = 5, 020/1000*200 = 4, 030/1000*200 = 6; 100/1000*500 = 50, 100/1000*200 = 20, 200 -> 100, 40
    assert xy(f0.points) == [(approx(5.0), approx(4.0)), (approx(5.0), approx(6.0))]
    assert xy(f5.points) == [(approx(50.0), approx(20.0)), (approx(100.0), approx(40.0))]
    assert (f0.points[0].x_norm, f0.points[0].y_norm) == (10, 20) and out.count == 2


def test_allenai_multi_object_track_ids_across_frames():
    text = '<tracks coords="2.0 1 300 300\t3.0 1 300 300 2 400 400\t6.0 3 400 100\t7.0 1 300 300 2 400 400 3 400 400">debug</tracks>'
    # every 3rd frame of a 3 fps video: 0, 1, ..., 7 s; frame numbers 0, 3, ..., 21
    out = parse_points(text, video=Video.from_frames_indices(1000, 1000, range(0, 24, 3), fps=3))
    assert [(f.timestamp, f.frame_index, f.video_frame) for f in out.frames] == [(2.0, 2, 6), (3.0, 3, 9), (6.0, 6, 18), (7.0, 7, 21)]
    tracks = out.elements[0].tracks()
    assert {k: [f.timestamp for f, _ in v] for k, v in tracks.items()} == {1: [2.0, 3.0, 7.0], 2: [3.0, 7.0], 3: [6.0, 7.0]}
    assert [xy([p])[0] for _, p in tracks[3]] == [(400.0, 100.0), (400.0, 400.0)]
    assert out.count == 3 and out.point_count == 3 and len(out.points) == 7


def test_allenai_html_v2_track_unsorted_ids():
    text = ('<tracks coords="0.0 1 200 100 2 200 800 3 500 200;1.0 3 050 050 4 060 060 5 100 100 1 900 900;'
            '2.0 2 001 001 5 400 400 6 425 425 4 450 450 1 500 500 3 999 999">debug</tracks>')
    out = parse_points(text, video=Video(2000, 1000))
    element = out.elements[0]
    assert element.separator == ";" and element.count == 6
    tracks = element.tracks()
    # object 1: 200/1000*2000 = 400, 100/1000*1000 = 100; 900 -> 1800, 900; 500 -> 1000, 500
    assert [xy([p])[0] for _, p in tracks[1]] == [(approx(400.0), approx(100.0)), (approx(1800.0), approx(900.0)),
                                                  (approx(1000.0), approx(500.0))]
    # object 2 at 2.0 s: 001/1000*2000 = 2, 001/1000*1000 = 1; object 3 at 1.0 s: 050 -> 100, 50; at 2.0 s: 999 -> 1998, 999
    assert xy([tracks[2][1][1]]) == [(approx(2.0), approx(1.0))]
    assert [xy([p])[0] for _, p in tracks[3]] == [(approx(1000.0), approx(200.0)), (approx(100.0), approx(50.0)),
                                                  (approx(1998.0), approx(999.0))]


def test_tracks_without_sizes_keep_timestamps():
    out = parse_points('<tracks coords="0.0 1 100 100;0.5 1 120 110">ball</tracks>')
    assert [f.timestamp for f in out.frames] == [0.0, 0.5] and xy(out.points) == [(None, None), (None, None)]
    assert out.count == 1


# ---------------------------------------------------------------------------------------------
# Legacy Molmo-1 formats (0-100)


def test_legacy_single_point():
    out = parse_points('<point x="10.5" y="20.0" alt="a cup">cup</point>', (640, 480))
    (element,) = out.elements
    assert (element.tag, element.syntax, element.scale, element.label, element.alt) == ("point", "legacy", 100, "cup", "a cup")
    # 10.5/100*640 = 67.2, 20.0/100*480 = 96.0
    assert xy(element.points) == [(approx(67.2), approx(96.0))] and element.points[0].object_id == 1


def test_allenai_legacy_multi_point():
    text = ('<points x1="23.0" y1="17.7" x2="38.2" y2="24.1" x3="43.5" y3="5.0" x4="44.6" y4="13.8" x5="54.9" y5="20.4" '
            'x6="59.6" y6="7.7" x7="67.9" y7="12.3" x8="75.4" y8="25.0" x9="78.5" y9="7.7" x10="83.8" y10="20.3" '
            'x11="87.4" y11="12.5" x12="97.3" y12="17.3" alt="purple plates">purple plates</points>')
    out = parse_points(text, (360, 640))
    assert out.count == 12 and [p.object_id for p in out.points] == list(range(1, 13))
    pts = xy(out.points)
    # 23.0/100*360 = 82.8, 17.7/100*640 = 113.28; 43.5/100*360 = 156.6, 5.0/100*640 = 32.0;
    # 83.8/100*360 = 301.68, 20.3/100*640 = 129.92; 97.3/100*360 = 350.28, 17.3/100*640 = 110.72
    assert pts[0] == (approx(82.8), approx(113.28)) and pts[2] == (approx(156.6), approx(32.0))
    assert pts[9] == (approx(301.68), approx(129.92)) and pts[11] == (approx(350.28), approx(110.72))
    assert out.elements[0].alt == "purple plates"


def test_legacy_counting_wrapper_and_syntax_flag():
    text = 'Counting the <points x1="10.0" y1="10.0" x2="20.0" y2="20.0" alt="dogs">dogs</points> shows a total of 2.'
    out = parse_points(text, (50, 50), syntax="legacy")
    # 10.0/100*50 = 5, 20.0/100*50 = 10
    assert xy(out.points) == [(approx(5.0), approx(5.0)), (approx(10.0), approx(10.0))]
    assert out.count == 2 and not out.count_mismatch


# ---------------------------------------------------------------------------------------------
# Malformed output: refused, saying what and where

ONE = (640, 480)
TWO = [(640, 480), (320, 240)]
VID = Video(640, 480, timestamps=[0.0, 0.5, 1.0])


@pytest.mark.parametrize(
    "text, kwargs, fragment, offset",
    [
        pytest.param('<points coords="1 1 100 100">cats', {}, "unclosed <points> element", 0, id="unclosed-element"),
        pytest.param('ok <points coords="1 1 100 100"', {}, "no '>'", 3, id="unclosed-tag"),
        pytest.param('<points coords="1 1 100 100">a <points coords="1 1 200 200">b</points>', {}, "a <points tag at character 31 comes before", 0,
                     id="nested-open"),
        pytest.param("cats</points>", {}, "closing </points> without an opening tag", 4, id="stray-close"),
        pytest.param('<points coords="1 1 100 100>x</points>', {}, "unclosed quote in attribute coords", 15, id="unclosed-quote"),
        pytest.param('<points coords="1 1 9a0 100">x</points>', {}, "non-numeric character 'a' in coords", 21, id="non-numeric"),
        pytest.param('<points coords="1 1 100">x</points>', {}, "incomplete point: 2 value(s)", 18, id="missing-y"),
        pytest.param('<points coords="1 1 100 200 2 300">x</points>', {}, "incomplete point: 2 value(s)", 28, id="missing-in-second"),
        pytest.param('<points coords="1 1 1200 100">x</points>', {}, "x 1200 is outside the 0-1000", 20, id="x-out-of-scale"),
        pytest.param('<points coords="1 1 100 1001">x</points>', {}, "y 1001 is outside the 0-1000", 24, id="y-out-of-scale"),
        pytest.param('<points coords="1 1 99 100">x</points>', {}, "x '99' has fewer than 3 digits", 20, id="short-x"),
        pytest.param('<points coords="1 1 100 5">x</points>', {}, "y '5' has fewer than 3 digits", 24, id="short-y"),
        pytest.param('<points coords="1 1 99.5 100">x</points>', {}, "x '99.5' is not an integer", 20, id="decimal-x"),
        pytest.param('<points coords="1 1.5 100 100">x</points>', {}, "object id '1.5' is not an integer", 18, id="decimal-id"),
        pytest.param('<points coords="2 1 100 100">x</points>', {"image_sizes": ONE}, "image index 2 beyond the 1 image(s)", 16,
                     id="index-beyond-one"),
        pytest.param('<points coords="1 1 100 100;3 2 100 100">x</points>', {"image_sizes": TWO}, "image index 3 beyond the 2 image(s)",
                     28, id="index-beyond-two"),
        pytest.param('<points coords="0 1 100 100">x</points>', {"image_sizes": TWO}, "image index 0 beyond", 16, id="index-zero"),
        pytest.param('<points coords="0.1 1 100 100">x</points>', {"image_sizes": ONE}, "image index '0.1' is not a positive integer", 16,
                     id="timestamp-for-image"),
        pytest.param('<points coords="1 1 100 100 1 200 200">x</points>', {}, "object id 1 appears twice in frame 1", 28,
                     id="duplicate-id"),
        pytest.param('<tracks coords="0.0 1 100 100;0.5 2 100 100 2 300 300">x</tracks>', {"video": VID},
                     "object id 2 appears twice in frame 0.5", 44, id="duplicate-track-id"),
        pytest.param('<tracks coords="0.0 1 100 100;0.0 1 200 200">x</tracks>', {"video": VID}, "timestamp 0.0 appears twice", 30,
                     id="repeated-timestamp"),
        pytest.param('<points coords="1 1 100 100;">x</points>', {}, "empty frame in coords", 28, id="trailing-separator"),
        pytest.param('<points coords="0.1;0.2 1 100 100">x</points>', {"video": Video(64, 48)}, "frame 0.1 has no points", 16,
                     id="frame-without-points"),
        pytest.param('<tracks coords="0.0 1 100 100;5.0 1 100 100">x</tracks>', {"video": VID},
                     "timestamp 5.0 is not the time of any sampled frame (0..1 s)", 30, id="timestamp-outside-video"),
        pytest.param('<points coords="1 1 100 100;0.5 2 100 100">x</points>', {}, "mixes image indices and timestamps", 28,
                     id="mixed-frame-fields"),
        pytest.param('<point x="120.0" y="10.0" alt="a">a</point>', {}, "x=120.0 is outside the legacy 0-100", 10, id="legacy-out-of-scale"),
        pytest.param('<point x="ten" y="10.0" alt="a">a</point>', {}, "x='ten' is not a number", 10, id="legacy-non-numeric"),
        pytest.param('<points x1="10.0" y1="10.0" x2="20.0" alt="a">a</points>', {}, "x2 has no matching y2", 32, id="legacy-missing-y"),
        pytest.param('<point x="10.0" y="10.0">a</point>', {"video": VID}, "cannot be read for a video", 0, id="legacy-video"),
        pytest.param('<point x="10.0" y="10.0">a</point>', {"image_sizes": TWO}, "cannot be read for several images", 0,
                     id="legacy-multi-image"),
        pytest.param('<points coords="1 1 100 100">x</points>', {"syntax": "legacy"}, "but syntax='legacy'", 0, id="syntax-legacy"),
        pytest.param('<point x="10.0" y="10.0">a</point>', {"syntax": "molmo2"}, "but syntax='molmo2'", 0, id="syntax-molmo2"),
        pytest.param('<tracks x1="10.0" y1="10.0">a</tracks>', {}, "<tracks> without a coords attribute", 0, id="tracks-no-coords"),
        pytest.param('<points alt="cats">cats</points>', {}, "neither coords (Molmo2) nor x/y", 0, id="no-coordinates"),
        pytest.param("<points cats\t-\t1 990 800/>", {}, "malformed attribute in <points> tag", 8, id="compact-legacy"),
        pytest.param('There are 2 <points coords="1 1 100 100 2 200 200">x</points>. Counting shows a total of 3.', {},
                     "conflicting counts: 2 and 3", 72, id="conflicting-counts"),
    ],
)
def test_malformed_output_is_refused(text, kwargs, fragment, offset):
    with pytest.raises(PointingFormatError) as info:
        parse_points(text, **kwargs)
    assert fragment in str(info.value)
    assert info.value.offset == offset
    assert isinstance(info.value, ValueError)  # callers that only know ValueError still catch it


def test_bad_arguments_are_value_errors_not_format_errors():
    with pytest.raises(ValueError, match="not both"):
        parse_points("", (1, 1), video=Video(1, 1))
    with pytest.raises(ValueError, match="width, height"):
        parse_points("", (0, 480))
    with pytest.raises(ValueError, match="on_mismatch"):
        count_reward("3", 3, on_mismatch="maybe")


# ---------------------------------------------------------------------------------------------
# Rewards: malformed output scores 0.0 and never raises


@pytest.mark.parametrize(
    "text, expected, on_mismatch, reward",
    [
        ('Counting the <points coords="1 1 900 400 2 911 800">dogs</points> shows a total of 2.', 2, "zero", 1.0),
        ('Counting the <points coords="1 1 900 400 2 911 800">dogs</points> shows a total of 2.', 3, "zero", 0.0),
        ("There are none.", 0, "zero", 1.0),
        ("No dogs here.", 0, "zero", 0.0),
        ('<points coords="1 1 900 400 2 911 800 3 100 100">dogs</points>', 3, "zero", 1.0),
        ('<points coords="1 1 90 400">dogs</points>', 1, "zero", 0.0),  # malformed: short x
        ('Counting the <points coords="1 1 100 100">dogs</points> shows a total of 3.', 3, "zero", 0.0),
        ('Counting the <points coords="1 1 100 100">dogs</points> shows a total of 3.', 3, "stated", 1.0),
        ('Counting the <points coords="1 1 100 100">dogs</points> shows a total of 3.', 1, "points", 1.0),
    ],
)
def test_count_reward(text, expected, on_mismatch, reward):
    assert count_reward(text, expected, on_mismatch=on_mismatch) == reward


def test_points_in_boxes_needs_one_to_one_matching():
    # 1000x1000 image: pixels equal the written values. Point 1 (30, 30) lies in both boxes, point 2
    # (80, 80) only in the big one; the greedy choice (point 1 -> big box) would leave point 2 out,
    # a maximum matching pairs point 1 with the small box and point 2 with the big one.
    text = 'Counting the <points coords="1 1 030 030 2 080 080">x</points> shows a total of 2.'
    boxes = [(0, 0, 100, 100), (0, 0, 50, 50)]
    assert points_in_boxes_reward(text, boxes, (1000, 1000)) == 1.0
    # Three boxes, two found: precision 2/2 = 1, recall 2/3, F1 = 2*1*(2/3)/(1+2/3) = 0.8
    boxes3 = boxes + [(900, 900, 950, 950)]
    assert points_in_boxes_reward(text, boxes3, (1000, 1000)) == approx(0.8)
    assert points_in_boxes_reward(text, boxes3, (1000, 1000), metric="precision") == 1.0
    assert points_in_boxes_reward(text, boxes3, (1000, 1000), metric="recall") == approx(2 / 3)


def test_points_in_boxes_multi_image_and_edge_cases():
    # image 1 (640x480): 500 -> 320, 240; image 2 (320x240): 500 -> 160, 120 and 100 -> 32, 24
    text = '<points coords="1 1 500 500;2 2 500 500 3 100 100">x</points>'
    boxes = {1: [(300, 220, 340, 260)], 2: [(150, 110, 170, 130)]}
    # 3 points, 2 inside their image's box: precision 2/3, recall 2/2, F1 = 2*(2/3)/(5/3) = 0.8
    assert points_in_boxes_reward(text, boxes, TWO) == approx(0.8)
    # the box of image 1 does not count for image 2's points
    assert points_in_boxes_reward(text, {2: [(300, 220, 340, 260)]}, TWO, metric="precision") == 0.0
    assert points_in_boxes_reward("There are none.", [], ONE) == 1.0
    assert points_in_boxes_reward("There are none.", [(0, 0, 10, 10)], ONE) == 0.0
    assert points_in_boxes_reward('<points coords="1 1 100 100">x', [(0, 0, 640, 480)], ONE) == 0.0  # unclosed
    assert points_in_boxes_reward('There are 2 <points coords="1 1 100 100">x</points>.', [(0, 0, 640, 480)], ONE) == 0.0
    assert points_in_boxes_reward('There are 2 <points coords="1 1 100 100">x</points>.', [(0, 0, 640, 480)], ONE,
                                  on_mismatch="ignore") == 1.0


def test_points_in_boxes_survives_a_degenerate_answer():
    many = " ".join(f"{i} 500 500" for i in range(1, 3001))
    text = f'<points coords="1 {many}">x</points>'
    # 3000 points in one box: one match, precision 1/3000, recall 1/1
    assert points_in_boxes_reward(text, [(0, 0, 640, 480)], ONE, metric="precision") == approx(1 / 3000)
    assert points_in_boxes_reward(text, [(0, 0, 640, 480)], ONE, metric="recall") == 1.0


def test_track_reward_is_identity_aware():
    video = Video.from_frames_indices(1000, 1000, [0, 10, 20], fps=10)  # 0.0, 1.0, 2.0 s; pixels = values
    expected = {"car": {0.0: (100, 100), 1.0: (200, 100), 2.0: (300, 100)}, "dog": {0.0: (800, 800), 1.0: (700, 800)}}
    perfect = '<tracks coords="0.0 1 100 100 2 800 800;1.0 1 200 100 2 700 800;2.0 1 300 100">x</tracks>'
    assert track_reward(perfect, expected, video, radius=5) == 1.0
    # Positions within 5 px (3-4-5 triangle: (103, 104) is 5 px from (100, 100)) still hit.
    near = '<tracks coords="0.0 1 103 104 2 800 800;1.0 1 200 100 2 700 800;2.0 1 300 100">x</tracks>'
    assert track_reward(near, expected, video, radius=5) == 1.0 and track_reward(near, expected, video, radius=4) < 1.0
    # Identity switch at 1.0 s: track 1 follows the car, then the dog. Matching track 1 <-> car keeps
    # 2 hits (0.0, 2.0), track 2 <-> dog 1 hit (0.0): tp = 3 of 5 predicted and 5 true, F1 = 0.6
    switch = '<tracks coords="0.0 1 100 100 2 800 800;1.0 1 700 800 2 200 100;2.0 1 300 100">x</tracks>'
    assert track_reward(switch, expected, video, radius=5) == approx(0.6)
    # Missing the dog entirely: tp 3, precision 3/3, recall 3/5, F1 = 2*0.6/1.6 = 0.75
    car_only = '<tracks coords="0.0 1 100 100;1.0 1 200 100;2.0 1 300 100">x</tracks>'
    assert track_reward(car_only, expected, video, radius=5) == approx(0.75)
    assert track_reward(car_only, expected, video, radius=5, metric="recall") == approx(0.6)
    assert track_reward('<tracks coords="0.0 1 100 100;9.0 1 200 100">x</tracks>', expected, video, radius=5) == 0.0
    # Without sampled-frame times, frames are compared at 0.1 s resolution.
    assert track_reward(perfect, expected, Video(1000, 1000), radius=5) == 1.0


def test_imports_without_torch_vllm_or_transformers():
    code = ("import sys, molmo2_shim.pointing; "
            "print(sorted(m for m in ('torch', 'vllm', 'transformers', 'numpy') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
