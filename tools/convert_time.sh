#!/usr/bin/env bash
# Wall time of `edgekit convert`, alternating --serial and the default (worker process) build.
# Usage: tools/convert_time.sh WEIGHTS CALIB_DIR [ROUNDS] [TARGET]
#   e.g. tools/convert_time.sh v2.pt ../shared/data/imagenet-sample 3 rpi4
set -euo pipefail
weights=$1; calib=$2; rounds=${3:-3}; target=${4:-rpi4}
edgekit=${EDGEKIT:-edgekit}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for r in $(seq 1 "$rounds"); do
  for mode in serial default; do
    flag=(); [ "$mode" = serial ] && flag=(--serial)
    start=$(date +%s.%N)
    "$edgekit" convert --target "$target" --weights "$weights" --calib "$calib" --calib-size 200 \
      --out "$out/$mode" "${flag[@]}" > "$out/$mode.log" 2>&1 || { echo "round $r $mode failed:"; tail -3 "$out/$mode.log"; exit 1; }
    end=$(date +%s.%N)
    printf "round %s %-8s %.1f s\n" "$r" "$mode" "$(echo "$end - $start" | bc)"
  done
done
