#!/usr/bin/env bash
# verl-agent GiGPO on Sokoban (a visual environment: one rendered board per step, the image
# placeholder mid-text) with allenai/Molmo2-4B; rollouts on vLLM 0.11.0 + molmo2-shim.
#
# Prerequisites (docs/verl.md, "verl-agent"): verl-agent checkout with the two Molmo2 changes
# (actor class, and preprocess_single_sample calling examples/verl_agent/molmo2_trajectory.py),
# `pip install molmo2-shim`, the Sokoban environment (`pip install matplotlib gym==0.26.2
# gym_sokoban==0.0.6`). Run from the verl-agent checkout.
set -euo pipefail

MODEL=${MODEL:-allenai/Molmo2-4B}
HERE=$(cd "$(dirname "$0")" && pwd)
DATA=${DATA:-$HOME/data/verl-agent/visual}
TP=${TP:-2}
# A 256x256 board is 410 Molmo2 image tokens; the Sokoban prompt adds ~300 text tokens.
MAX_PROMPT=${MAX_PROMPT:-1024}
MAX_RESPONSE=${MAX_RESPONSE:-512}

# The data files only mark the modality and the episode count; no images (see the script).
python3 "$HERE/prepare_visual_marker.py" --train 256 --val 64 --out "$DATA"

python3 -m verl.trainer.main_ppo \
    algorithm.adv_estimator=gigpo \
    data.train_files="$DATA/train.parquet" \
    data.val_files="$DATA/test.parquet" \
    data.train_batch_size=16 \
    data.val_batch_size=64 \
    data.max_prompt_length=${MAX_PROMPT} \
    data.max_response_length=${MAX_RESPONSE} \
    data.truncation=error \
    data.return_raw_chat=True \
    data.trust_remote_code=True \
    actor_rollout_ref.model.path=${MODEL} \
    actor_rollout_ref.model.trust_remote_code=True \
    actor_rollout_ref.model.external_lib=molmo2_shim.auto \
    actor_rollout_ref.model.use_remove_padding=False \
    +actor_rollout_ref.model.override_config._attn_implementation=sdpa \
    actor_rollout_ref.model.enable_gradient_checkpointing=True \
    +actor_rollout_ref.actor.fsdp_config.wrap_policy.transformer_layer_cls_to_wrap=[Molmo2DecoderLayer] \
    +actor_rollout_ref.ref.fsdp_config.wrap_policy.transformer_layer_cls_to_wrap=[Molmo2DecoderLayer] \
    actor_rollout_ref.actor.optim.lr=1e-6 \
    actor_rollout_ref.actor.ppo_mini_batch_size=64 \
    actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4 \
    actor_rollout_ref.actor.use_kl_loss=True \
    actor_rollout_ref.rollout.name=vllm \
    actor_rollout_ref.rollout.tensor_model_parallel_size=${TP} \
    actor_rollout_ref.rollout.gpu_memory_utilization=0.5 \
    actor_rollout_ref.rollout.max_model_len=$((MAX_PROMPT + MAX_RESPONSE)) \
    actor_rollout_ref.rollout.max_num_batched_tokens=8192 \
    +actor_rollout_ref.rollout.limit_images=1 \
    actor_rollout_ref.rollout.enforce_eager=False \
    actor_rollout_ref.rollout.free_cache_engine=False \
    actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=8 \
    actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=8 \
    env.env_name=Sokoban \
    env.sokoban.mode=rgb_array \
    env.max_steps=15 \
    env.rollout.n=8 \
    trainer.n_gpus_per_node=2 \
    trainer.nnodes=1 \
    trainer.project_name=verl_agent_sokoban \
    trainer.experiment_name=gigpo_molmo2_4b_vllm_shim \
    "$@"
