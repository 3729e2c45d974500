"""An RL step end to end: the rollout's log-probs (vLLM with the shim, verl's in-process engine)
against the actor's, computed by the ORIGINAL model (remote code, float32) and by transformers'
native Molmo2 (its own environment) on `molmo2_shim.verl.collate(actor_inputs(...))`.

The micro-batch holds the prompt shapes verl and verl-agent send: text-only ids without BOS
(verl-agent tokenises without special tokens), `<|image|>` placeholders, a placeholder mid-text
(verl-agent's Sokoban prompt), two images without placeholders (verl-agent), ids already
expanded by the HF processor (verl's agent loop), and a video. Responses are sampled
(temperature 1), as in RL.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import original
import pytest
import torch
from actor_scoring import max_error, response_logprobs

import golden

pytestmark = [pytest.mark.engine, pytest.mark.model]

TOLERANCE = 1e-4
VOCAB = 512
REPO = Path(__file__).resolve().parents[1]
SOKOBAN = ("You are a Sokoban solver. Push every box onto a target.\n# Current Step\n"
           "Your current observation is shown in the image: <|image|>\nChoose your next action.")


def chat(tokenizer, text: str) -> list[int]:
    """verl-agent's ids: the chat template on string content, tokenised without special tokens."""
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False)
    return tokenizer.encode(prompt, add_special_tokens=False)


@pytest.fixture(scope="module")
def rollout(inprocess):
    from vllm import SamplingParams

    from molmo2_shim.processing.processor import Molmo2Processor

    llm = inprocess.llm
    tok = llm.get_tokenizer()
    one = golden.model_case_images("one_image_640x480")
    two = golden.model_case_images("two_images_300x200_500x800")
    board = [golden.pil_image("rgb", 256, 256, 3)]
    video = golden.synth_video(3, 160, 120, 5)
    expanded = Molmo2Processor.from_pretrained(golden.CHECKPOINT, tokenizer=tok)(
        text=golden.manifest()["model_cases"]["one_image_640x480"]["prompt"], images=one)["input_ids"][0].tolist()
    requests = [
        ("text-only, no BOS", chat(tok, "What is the capital of France?"), None, None),
        ("placeholder", tok.encode(golden.manifest()["model_cases"]["one_image_640x480"]["prompt"],
                                   add_special_tokens=False), one, None),
        ("placeholder mid-text", chat(tok, SOKOBAN), board, None),
        ("two images, no placeholders", chat(tok, "Compare the two images."), two, None),
        ("expanded by the HF processor", expanded, one, None),
        ("video", chat(tok, "What happens in this video?"), None, [(video, {"fps": 2.0, "frames_indices": [0, 2, 4]})]),
    ]
    vllm_inputs = []
    for _, ids, images, videos in requests:
        data = {"image": images} if images else {"video": videos[0]} if videos else None
        vllm_inputs.append({"prompt_token_ids": ids, **({"multi_modal_data": data} if data else {})})
    params = SamplingParams(n=1, temperature=1.0, seed=7, max_tokens=8, logprobs=0, detokenize=False)
    outs = llm.generate(vllm_inputs, params)
    responses = [list(o.outputs[0].token_ids) for o in outs]
    logprobs = [[o.outputs[0].logprobs[k][t].logprob for k, t in enumerate(r)] for o, r in zip(outs, responses)]
    from molmo2_shim.verl import actor_inputs

    examples = [actor_inputs(golden.CHECKPOINT, ids, images, r, videos)
                for (_, ids, images, videos), r in zip(requests, responses)]
    for example, out in zip(examples, outs):  # the actor's prompt ids are exactly the ones vLLM used
        length = len(out.prompt_token_ids)
        assert example["input_ids"][0, :length].tolist() == list(out.prompt_token_ids)
    return {"names": [r[0] for r in requests], "examples": examples, "responses": responses,
            "rollout_logprobs": logprobs, "pad_token_id": tok.pad_token_id, "vocab": VOCAB}


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_original_actor_on_collated_inputs_equals_the_rollout(rollout, padding_side):
    model = original.model(str(golden.CHECKPOINT))
    actor = response_logprobs(model, rollout["examples"], rollout["responses"], rollout["pad_token_id"], padding_side,
                              False, VOCAB)
    errors = {n: max_error([a], [r]) for n, a, r in zip(rollout["names"], actor, rollout["rollout_logprobs"])}
    print(f"max |actor - rollout| log-prob per prompt ({padding_side} padding): {errors}")
    assert max(errors.values()) <= TOLERANCE, errors


def test_without_the_image_mask_the_actor_deviates(rollout):
    """verl's dp_actor passes no token_type_ids of its own (and FlashAttention-2 would drop them):
    the actor then attends causally among image tokens. This is the gap the helpers close."""
    model = original.model(str(golden.CHECKPOINT))
    actor = response_logprobs(model, rollout["examples"], rollout["responses"], rollout["pad_token_id"], "right",
                              False, VOCAB, with_token_types=False)
    gap = max_error(actor, rollout["rollout_logprobs"])
    print(f"max |actor - rollout| without token_type_ids: {gap:.3f}")
    assert gap > 0.1


def test_native_transformers_actor_equals_the_rollout(rollout, tmp_path):
    """transformers >= 5.20's Molmo2, in the reference environment (vLLM pins transformers < 5)."""
    sys.path.insert(0, str(REPO / "tools"))
    import testenv

    python = testenv.env_root() / testenv.REFERENCE["env"] / "bin" / "python"
    if not python.exists():
        pytest.fail(f"the transformers-native reference environment is not built ({python}): "
                    "run `python tools/testenv.py reference`", pytrace=False)
    data = tmp_path / "rollout.pt"
    torch.save({k: rollout[k] for k in ("examples", "responses", "rollout_logprobs", "pad_token_id", "vocab")}, data)
    proc = subprocess.run([str(python), str(REPO / "tests" / "actor_scoring.py"), str(data), str(golden.CHECKPOINT)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"native transformers actor vs rollout: {result}")
    assert result["transformers_class"].startswith("transformers.models.molmo2")
    assert result["max_error_left"] <= TOLERANCE and result["max_error_right"] <= TOLERANCE


def test_verl_row_gives_dp_actor_the_mask(rollout):
    """verl-agent stores rows; dp_actor left-pads prompts, appends responses and concatenates
    multi_modal_inputs per key. The rows built by verl_row reproduce the rollout's log-probs."""
    from molmo2_shim.verl import position_ids, verl_row

    model = original.model(str(golden.CHECKPOINT))
    pad, prompt_len, response_len = rollout["pad_token_id"], 1600, 8
    # one micro-batch of image samples (the original cannot take text-only samples next to them)
    picks = [i for i, e in enumerate(rollout["examples"]) if "pixel_values" in e]
    rows, inputs = [], []
    for i in picks:
        ex = rollout["examples"][i]
        prompt = ex["input_ids"][0, : ex["input_ids"].shape[1] - len(rollout["responses"][i])].tolist()
        images = _images_of(rollout["names"][i])
        row = verl_row(golden.CHECKPOINT, prompt, prompt_len, response_len, pad, images)
        response = torch.tensor(rollout["responses"][i] + [pad] * (response_len - len(rollout["responses"][i])))
        rows.append(row)
        inputs.append(torch.cat([row["input_ids"], response]))
    input_ids = torch.stack(inputs)
    mask = torch.stack([torch.cat([r["attention_mask"], (torch.arange(response_len) < len(rollout["responses"][i])).long()])
                        for r, i in zip(rows, picks)])
    keys = {k for r in rows for k in r["multi_modal_inputs"]}
    # verl's extract_multi_modal_inputs: torch.cat per key over the samples that have it
    mm = {k: torch.cat([r["multi_modal_inputs"][k] for r in rows if k in r["multi_modal_inputs"]]) for k in keys}
    with torch.no_grad():
        logits = model(input_ids=input_ids, attention_mask=mask, position_ids=position_ids(mask), **mm,
                       use_cache=False).logits.double()
    logp = torch.log_softmax(logits[..., :VOCAB], -1)
    for row, i in enumerate(picks):
        got = [float(logp[row, prompt_len - 1 + k, t]) for k, t in enumerate(rollout["responses"][i])]
        assert max_error([got], [rollout["rollout_logprobs"][i]]) <= TOLERANCE, rollout["names"][i]


def _images_of(name: str) -> list:
    if name.startswith("two"):
        return golden.model_case_images("two_images_300x200_500x800")
    if name == "placeholder mid-text":
        return [golden.pil_image("rgb", 256, 256, 3)]
    return golden.model_case_images("one_image_640x480")


def test_flash_attention_in_the_actor_is_refused_or_switched(monkeypatch):
    from molmo2_shim.errors import Molmo2ConfigError
    from molmo2_shim.verl import exact_actor_attention

    monkeypatch.delenv("MOLMO2_SHIM_ALLOW_INEXACT", raising=False)
    model = original.load_model(str(golden.CHECKPOINT))
    model.config._attn_implementation = "flash_attention_2"
    with pytest.raises(Molmo2ConfigError, match="override_config.attn_implementation=sdpa"):
        exact_actor_attention(model)
    assert exact_actor_attention(model, switch=True) == "sdpa"
    assert model.config.text_config._attn_implementation == "sdpa"


def test_micro_batches_the_models_cannot_take_are_refused(rollout):
    from molmo2_shim.errors import Molmo2InputError
    from molmo2_shim.verl import collate, split_by_modality

    examples, names = rollout["examples"], rollout["names"]
    text, video = names.index("text-only, no BOS"), names.index("video")
    image = names.index("placeholder")
    with pytest.raises(Molmo2InputError, match="text-only and image"):
        collate([examples[text], examples[image]], 0)
    with pytest.raises(Molmo2InputError, match="image and video"):
        collate([examples[image], examples[video]], 0, native=True)
    collate([examples[text], examples[image]], 0, native=True)  # native Molmo2 takes that mix
    assert split_by_modality(examples) == [[text], sorted(set(range(len(names))) - {text, video}), [video]]


def test_multi_turn_trajectory_as_verl_agent_builds_it(inprocess):
    """Each step re-sends the rules, the growing history and a new observation image, placed
    mid-text (examples/verl_agent/molmo2_trajectory.py builds the row). The step that shares its
    text prefix with the previous one (and may read it from the prefix cache) stays exact."""
    from vllm import SamplingParams

    sys.path.insert(0, str(REPO / "examples" / "verl_agent"))
    from molmo2_trajectory import molmo2_sample

    from molmo2_shim.verl import actor_inputs

    class Data:
        max_prompt_length, max_response_length = 1600, 8

    llm = inprocess.llm
    tok = llm.get_tokenizer()
    params = SamplingParams(temperature=1.0, seed=3, max_tokens=8, logprobs=0, detokenize=False)
    history = ""
    model = original.model(str(golden.CHECKPOINT))
    for turn in range(3):
        board = golden.pil_image("rgb", 256, 256, 20 + turn)
        text = f"{SOKOBAN.split('# Current Step')[0]}{history}# Current Step\nYour observation: <image>\nNext action?"
        row = molmo2_sample(tok, golden.CHECKPOINT, text, board, Data)
        out = llm.generate([{"prompt_token_ids": row["raw_prompt_ids"], "multi_modal_data": {"image": [board]}}],
                           params)[0]
        real = row["input_ids"][row["attention_mask"].bool()].tolist()
        assert real == list(out.prompt_token_ids), f"turn {turn}: the row's ids are not the ones vLLM used"
        response = list(out.outputs[0].token_ids)
        rollout = [out.outputs[0].logprobs[k][t].logprob for k, t in enumerate(response)]
        example = actor_inputs(golden.CHECKPOINT, row["raw_prompt_ids"], [board], response)
        actor = response_logprobs(model, [example], [response], tok.pad_token_id, "left", False, VOCAB)
        assert max_error(actor, [rollout]) <= TOLERANCE, f"turn {turn}"
        history += f"Step {turn}: {tok.decode(response)}\n"
