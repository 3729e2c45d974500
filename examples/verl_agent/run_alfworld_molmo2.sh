#!/usr/bin/env bash
# verl-agent GiGPO on ALFWorld with allenai/Molmo2-4B, rollouts on vLLM 0.11.x + molmo2-shim.
#
# Prerequisites (see docs/verl.md): verl-agent with the Molmo2 actor/preprocessing changes,
# `pip install molmo2-shim` and vLLM 0.11.0-0.11.2 in the training image.
# Run from the verl-agent checkout.
set -euo pipefail

MODEL=${MODEL:-allenai/Molmo2-4B}
ENGINE=vllm
TP=${TP:-2}
LIMIT_IMAGES=1
# One 640x480 observation is 752 image tokens; at most 1400 per image (max_crops=8).
MAX_PROMPT=${MAX_PROMPT:-2048}
MAX_RESPONSE=${MAX_RESPONSE:-512}

python3 -m verl.trainer.main_ppo \
    algorithm.adv_estimator=gigpo \
    data.train_batch_size=16 \
    data.val_batch_size=128 \
    data.max_prompt_length=${MAX_PROMPT} \
    data.max_response_length=${MAX_RESPONSE} \
    data.return_raw_chat=True \
    data.trust_remote_code=True \
    actor_rollout_ref.model.path=${MODEL} \
    actor_rollout_ref.model.trust_remote_code=True \
    actor_rollout_ref.model.external_lib=molmo2_shim.auto \
    actor_rollout_ref.model.use_remove_padding=False \
    actor_rollout_ref.model.enable_gradient_checkpointing=True \
    +actor_rollout_ref.actor.fsdp_config.wrap_policy.transformer_layer_cls_to_wrap=[Molmo2DecoderLayer] \
    +actor_rollout_ref.ref.fsdp_config.wrap_policy.transformer_layer_cls_to_wrap=[Molmo2DecoderLayer] \
    actor_rollout_ref.actor.optim.lr=1e-6 \
    actor_rollout_ref.actor.ppo_mini_batch_size=64 \
    actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4 \
    actor_rollout_ref.actor.use_kl_loss=True \
    actor_rollout_ref.rollout.name=${ENGINE} \
    actor_rollout_ref.rollout.tensor_model_parallel_size=${TP} \
    actor_rollout_ref.rollout.gpu_memory_utilization=0.5 \
    actor_rollout_ref.rollout.max_model_len=$((MAX_PROMPT + MAX_RESPONSE)) \
    actor_rollout_ref.rollout.max_num_batched_tokens=8192 \
    +actor_rollout_ref.rollout.limit_images=${LIMIT_IMAGES} \
    actor_rollout_ref.rollout.enforce_eager=False \
    actor_rollout_ref.rollout.free_cache_engine=False \
    actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=8 \
    actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=8 \
    env.env_name=alfworld/AlfredTWEnv \
    env.max_steps=50 \
    env.rollout.n=8 \
    trainer.n_gpus_per_node=8 \
    trainer.nnodes=1 \
    trainer.project_name=verl_agent_alfworld \
    trainer.experiment_name=gigpo_molmo2_4b_vllm_shim \
    "$@"
