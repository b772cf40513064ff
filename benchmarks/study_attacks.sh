#!/bin/bash
# HarmBench under jailbreak attacks, for each trained method of a study.
#
# Usage: [ATTACKS="prefill fiction"] benchmarks/study_attacks.sh [STUDY_DIR] [OUTPUT_DIR]
#   STUDY_DIR   a finished `mosr run` folder with its adapters (default: docs/study/smollm2-full)
#   OUTPUT_DIR  one evaluation folder per method goes here (default: runs/attacks)
#   ATTACKS     the attacks to run (default: prefill refusal-suppression)
#
# Settings match configs/smollm2-full.yaml (64 new tokens, batch 32). Each method's direct-request
# generations are copied from the study, so only the attacked prompts are generated. mosr checks
# the copy sample by sample against the prompts it would send.
set -euo pipefail
study=${1:-docs/study/smollm2-full}
output=${2:-runs/attacks}
attack_args=()
for attack in ${ATTACKS:-prefill refusal-suppression}; do
  attack_args+=(--attack "$attack")
done

for method_dir in "$study"/methods/*/; do
  name=$(basename "$method_dir")
  name=${name%-*}
  if [ ! -f "$method_dir/train/adapter_model.safetensors" ]; then
    echo "skipping $name: no adapter weights in $method_dir/train (run the study to train them)" >&2
    continue
  fi
  mkdir -p "$output/$name/generations"
  if [ -f "$method_dir/eval/generations/harmbench.jsonl" ] && [ ! -f "$output/$name/generations/harmbench.jsonl" ]; then
    cp "$method_dir/eval/generations/harmbench.jsonl" "$output/$name/generations/"
  fi
  .venv/bin/mosr evaluate --adapter "$method_dir/train" --benchmark harmbench \
    "${attack_args[@]}" --max-new-tokens 64 --batch-size 32 --output "$output/$name"
done
