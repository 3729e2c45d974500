"""Import side effect: `import molmo2_shim.auto` activates the shim.

For verl's `actor_rollout_ref.model.external_lib=molmo2_shim.auto` and
`VERL_USE_EXTERNAL_MODULES=molmo2_shim.auto`, which import a module and call nothing.
"""

from .activation.installer import install

STATUS = install(automatic=True)
