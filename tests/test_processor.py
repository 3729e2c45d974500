"""The built-in processor reproduces the original processor's outputs (golden cases)."""

from __future__ import annotations

import numpy as np
import pytest

import golden

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")

from molmo2_shim.errors import Molmo2InputError  # noqa: E402
from molmo2_shim.processing.image import ImageProcessingConfig, preprocess_image  # noqa: E402
from molmo2_shim.processing.processor import Molmo2Processor  # noqa: E402

IMAGE_CASES = sorted(golden.manifest()["processor_cases"]["images"])


@pytest.fixture(scope="module")
def processor() -> Molmo2Processor:
    return Molmo2Processor.from_pretrained(golden.CHECKPOINT)


@pytest.mark.parametrize("name", IMAGE_CASES)
def test_pixels_pooling_and_grid(processor, name):
    case = golden.manifest()["processor_cases"]["images"][name]
    out = preprocess_image(golden.processor_case_image(name), processor.image_config)
    pixels = out.pixel_values.numpy()
    assert list(pixels.shape) == case["pixel_values_shape"]
    assert pixels.dtype == np.float32
    assert [golden.sha256_f32(c) for c in pixels] == [c["sha256_f32"] for c in case["per_crop"]]
    assert golden.sha256_f32(pixels) == case["pixel_values_sha256_f32"]
    np.testing.assert_array_equal(out.token_pooling.numpy(), golden.index_arrays()[f"{name}__image_token_pooling"])
    assert [list(out.grid)] == case["image_grids"]


@pytest.mark.parametrize("name", IMAGE_CASES)
def test_token_sequence_with_bos(processor, name):
    case = golden.manifest()["processor_cases"]["images"][name]
    out = processor(text="<|image|>", images=[golden.processor_case_image(name)])
    ids = out["input_ids"][0].tolist()
    assert ids == case["processor_input_ids_with_bare_placeholder"]
    tokens = processor.tokenizer.convert_ids_to_tokens(ids[1:])
    assert tokens == golden.rle_to_tokens(case["image_tokens_rle"])


def test_low_res_col_tokens_follow_the_processor_config(processor):
    """Without processor_config.json the original's code defaults add <im_col> to low-res rows."""
    from dataclasses import replace

    name = "rgb_640x480"
    case = golden.manifest()["processor_cases"]["images"][name]
    code_defaults = replace(processor.flags, use_single_crop_col_tokens=None)
    grid = case["image_grids"][0]
    from molmo2_shim.processing.layout import image_block

    block = image_block(grid, processor.special, code_defaults)
    assert len(block) == case["alt_remote_defaults_no_processor_config"]["num_image_tokens"]


@pytest.mark.parametrize("name", sorted(golden.manifest()["model_cases"]))
def test_model_case_inputs(processor, name):
    case = golden.manifest()["model_cases"][name]
    z = golden.model_case(name)
    kwargs = {}
    if "video" in case["sources"]:
        v = case["sources"]["video"]
        kwargs = {
            "videos": [golden.synth_video(v["num_frames"], v["width"], v["height"], v["seed"])],
            "video_metadata": {"fps": v["fps"], "frames_indices": list(range(v["num_frames"]))},
        }
    images = golden.model_case_images(name) or None
    out = processor(text=case["prompt"], images=images, **kwargs)
    np.testing.assert_array_equal(out["input_ids"][0].numpy(), z["input_ids"])
    np.testing.assert_array_equal(out["token_type_ids"][0].numpy(), z["token_type_ids"])
    if images:
        assert golden.sha256_f32(out["pixel_values"].numpy()) == case["pixel_values_sha256_f32"]
        np.testing.assert_array_equal(out["image_token_pooling"].numpy(), z["image_token_pooling"])
        np.testing.assert_array_equal(out["image_grids"].numpy(), z["image_grids"])
    if kwargs:
        assert golden.sha256_f32(out["pixel_values_videos"].numpy()) == case["pixel_values_videos_sha256_f32"]
        np.testing.assert_array_equal(out["video_token_pooling"].numpy(), z["video_token_pooling"])
        np.testing.assert_array_equal(out["video_grids"].numpy(), z["video_grids"])


def _edge(name: str) -> dict:
    return golden.manifest()["processor_cases"]["edge_cases"][name]


@pytest.mark.parametrize("shape", [(0, 0), (0, 10), (10, 0)])
def test_zero_sized_images_are_refused(processor, shape):
    from PIL import Image

    # The original fails deep inside torchvision; the shim names the problem.
    assert not _edge("pil_0x0")["ok"]
    with pytest.raises(Molmo2InputError, match="zero size"):
        preprocess_image(Image.new("RGB", shape), processor.image_config)
    with pytest.raises(Molmo2InputError, match="zero size"):
        preprocess_image(np.zeros((shape[1], shape[0], 3), np.uint8), processor.image_config)


def test_float_image_in_unit_range_is_accepted(processor):
    edge = _edge("float_image_in_0_1")
    arr = golden.synth_rgb(378, 378, 1234).astype(np.float32) / 255.0
    out = preprocess_image(arr, processor.image_config)
    assert list(out.pixel_values.shape) == edge["pixel_values_shape"]
    assert [list(out.grid)] == edge["image_grids"]


@pytest.mark.parametrize("name", ["no_placeholder_text_plus_one_image", "placeholder_without_image",
                                  "two_placeholders_one_image", "empty_text_no_image"])
def test_text_edge_cases(processor, name):
    edge = _edge(name)
    prompts = {
        "no_placeholder_text_plus_one_image": ("Describe the picture.", 1),
        "placeholder_without_image": ("Look: <|image|>", 0),
        "two_placeholders_one_image": ("<|image|> and <|image|>", 1),
        "empty_text_no_image": ("", 0),
    }
    text, n = prompts[name]
    images = [golden.pil_image("rgb", 378, 378, 1234)] if n else None
    out = processor(text=text, images=images)
    tokens = processor.tokenizer.convert_ids_to_tokens(out["input_ids"][0].tolist())
    assert tokens == golden.rle_to_tokens(edge["input_tokens_rle"][0])
    assert int(out["token_type_ids"].sum()) == edge["token_type_ids_sum"]


def test_image_processing_config_reads_the_checkpoint(processor):
    assert processor.image_config == ImageProcessingConfig.from_dict(
        __import__("json").loads((golden.CHECKPOINT / "preprocessor_config.json").read_text())
    )
    assert processor.video_config.frame.pooling_size == (3, 3)
