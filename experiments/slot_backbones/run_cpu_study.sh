#!/usr/bin/env bash
# The small CPU version of the slot-backbone study (numbers in README.md): 12 runs in two parallel
# sweeps of one thread each. ViTs use random-init weights (no DINOv2/DINO/CLIP weights offline);
# EfficientNet-Lite0 has real ImageNet weights. Features are computed once per image
# (task.cache_features=true); the slot model is shrunk so 20 epochs fit in minutes.
set -u
cd "$(dirname "$0")/../.."
OUT=${OUT:-runs}
SMALL=(trainer.max_epochs=20 trainer.limit_train_batches=null data.num_train=96 data.num_val=16 data.num_test=16
       data.num_workers=0 task.cache_features=true task.stats_batches=6 task.optim.lr=1e-3
       task.slots.slot_dim=64 task.slots.mlp_hidden=128 task.slots.input_mlp_hidden=128
       'task.decoder.hidden_dims=[128,128]' logger=csv trainer.enable_progress_bar=false paths.output_root=$OUT
       'hydra.sweep.subdir=${hydra.job.num}_${task.backbone.name}_${task.feature_norm}')
export OMP_NUM_THREADS=1
python train.py -m experiment=slots_effnet task.feature_norm=none,layernorm,standardize "${SMALL[@]}" \
  hydra.sweep.dir=$OUT/slot_backbones/cpu_effnet &
python train.py -m experiment=slots_dinov2 task.backbone.name=dinov2_vits14,dino_vits16,clip_vitb16 \
  task.feature_norm=none,layernorm,standardize pretrained=false "${SMALL[@]}" hydra.sweep.dir=$OUT/slot_backbones/cpu_vits &
wait
