"""Package discovery only (metadata is in pyproject.toml).

The repository keeps per-version code in a top-level `patches/` folder; it is installed as
the subpackage `molmo2_shim.patches` so no global `patches` module is ever created.
"""

from setuptools import find_packages, setup

# molmo2_shim/patches is a symlink to ../patches so a source checkout imports as installed;
# the installed package maps the real folder instead (package_dir in pyproject.toml).
shim = find_packages(include=["molmo2_shim", "molmo2_shim.*"], exclude=["molmo2_shim.patches", "molmo2_shim.patches.*"])
patch_sets = ["molmo2_shim." + name for name in find_packages(include=["patches", "patches.*"])]

setup(packages=shim + patch_sets)
