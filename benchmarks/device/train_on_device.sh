#!/bin/bash
# Train the 2D generation curve's DDPMs (benchmarks/generation_curve_2d.py settings) with nnugen_train on a GPU
# machine that has torch but no registry access, and bring back optimiser-free checkpoints to score here with
# `generation_curve_2d.py --external DIR --external-iterations ITERS --external-label LABEL`.
#
# Prepare, in the repository root (both folders are git-ignored and carried to the device):
#   .whl/        wheels for the device's Python (nnunetv2, acvl_utils, batchgenerators(v2), blosc2, ndindex, pydantic,
#                pydantic_core, annotated-types, typing-inspection, connected-components-3d,
#                dynamic_network_architectures, graphviz, nibabel, monai, opensimplex, torchinfo, yacs, future,
#                unittest2, linecache2, traceback2): `pip download --no-deps --only-binary=:all: --python-version 3.12 ...`
#                SimpleITK (53 MB) does not fit the 64 MiB transfer: a stand-in module lets the imports pass
#                (training reads nnU-Net's preprocessed blosc2 files only; the generative trainers skip validation).
#   .gpu/pre/    the curve's nnUNet_preprocessed/Dataset981_GenCurveAxial (without gt_segmentations), with the
#                nnugenPlans.json planned here (nnugen_plan reads raw images for the intensity map; the device has none)
# Run there: AUG=none EPOCHS=16 ITERS=256 KEEP=[4,16] LIMIT=165 bash benchmarks/device/train_on_device.sh
# Measured with it on 2026-12-04 (one H200, torch 2.11): docs/benchmarks.md, "Generation quality against compute".
set -u
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
EPOCHS=${EPOCHS:-16}; ITERS=${ITERS:-256}; KEEP=${KEEP:-[4,16]}; LIMIT=${LIMIT:-170}; DEVARG=${DEVARG:-}
OBJECTIVES=${OBJECTIVES:-eps v_min_snr rflow}; AUG=${AUG:-none}  # training.augmentation (session 10's runs: nnunet)
if [ -z "${LOCAL:-}" ]; then
  S=/tmp/site; mkdir -p $S
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target $S .whl/*.whl > /tmp/wheels.txt 2>&1 || { echo wheels failed; tail -5 /tmp/wheels.txt; exit 1; }
  python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --target $S . > /tmp/install.txt 2>&1 || { echo nnugen install failed; tail -5 /tmp/install.txt; exit 1; }
  export PYTHONPATH=$S:$PWD/benchmarks/device/simpleitk_stub PATH=$S/bin:$PATH nnUNet_extTrainer=$S/nnugen/nnunet_ext
  export nnUNet_def_n_proc=8 nnUNet_n_proc_DA=8
  [ -d $S/nnugen/entrypoints ] || cp -r entrypoints $S/nnugen/entrypoints
  [ -d $S/nnugen/templates ] || cp -r templates $S/nnugen/templates
  mkdir -p /tmp/bin
  for c in plan train; do printf '#!/bin/bash\nexec python3 -P -c "import sys; from nnugen.entrypoints.%s import main; sys.exit(main())" "$@"\n' $c > /tmp/bin/nnugen_$c; chmod +x /tmp/bin/nnugen_$c; done
  export PATH=/tmp/bin:$PATH
fi
export nnUNet_preprocessed=$PWD/.gpu/pre nnUNet_results=/tmp/gpu_results nnUNet_raw=/tmp/gpu_raw PYTHONUNBUFFERED=1
mkdir -p /tmp/gpu_raw /tmp/gpu_results
(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; python3 -c "import torch, nnunetv2; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())") 2>&1 | tee "$OUT/gpu.txt"
F=/tmp/gpu_results/Dataset981_GenCurveAxial/NnugenDDPMTrainer__nnugenPlans__2d/fold_all
for obj in $OBJECTIVES; do
  case $obj in
    eps) sets=(--set ddpm.diffusion.model_output=eps);;
    v_min_snr) sets=(--set ddpm.diffusion.model_output=v --set ddpm.diffusion.loss_weighting=min_snr);;
    rflow) sets=(--set ddpm.diffusion.process=rflow --set ddpm.diffusion.loss_weighting=uniform);;
  esac
  nnugen_plan -d 981 -c 2d --overwrite "${sets[@]}" --set ddpm.training.epochs=$EPOCHS \
    --set ddpm.training.iterations_per_epoch=$ITERS --set ddpm.training.val_iterations_per_epoch=1 \
    --set ddpm.training.initial_lr=0.0003 --set ddpm.training.preview_every=$EPOCHS --set "ddpm.training.keep_epochs=$KEEP" \
    --set "ddpm.denoiser.features_per_stage=[16,32,64,64]" --set "ddpm.denoiser.attention_stages=[]" \
    --set ddpm.memory.batch_size=8 --set ddpm.training.augmentation=$AUG > /tmp/plan_$obj.txt 2>&1 || { echo "$obj plan failed"; tail -3 /tmp/plan_$obj.txt; continue; }
  rm -rf "$(dirname $F)"
  start=$(date +%s)
  timeout $LIMIT nnugen_train 981 all 2d --task ddpm --seed 0 --no-progress $DEVARG > /tmp/train_$obj.txt 2>&1
  echo "== $obj exit $? wall $(( $(date +%s) - start )) s" | tee -a "$OUT/gpu.txt"
  grep -h -E "Epoch time|train_loss|val_loss|ompil|peak|memory|precision|AMP|amp" $F/training_log_*.txt | cut -c1-200 | head -80 >> "$OUT/gpu.txt"
  grep -i -E "error|Traceback" /tmp/train_$obj.txt | head -5 >> "$OUT/gpu.txt"; tail -3 /tmp/train_$obj.txt >> "$OUT/gpu.txt"
  for e in $(echo $KEEP | tr -d '[]' | tr ',' ' '); do
    f=$F/checkpoint_epoch_$(printf %04d $e).pth
    [ -f $f ] && python3 benchmarks/device/strip_checkpoint.py $f "$OUT/${obj}_$(printf %04d $e).pth"
  done
done
ls -la "$OUT"
