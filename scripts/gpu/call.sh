#!/bin/bash
# One device call: scripts/gpu/run.sh's stages named in ONLY (default: smoke check peer summary sanitizer sass ncu), their logs
# packed into $OUT/results.tgz (the device tool returns at most 8 files) and the summary printed last; VARIANT_ENV
# adds a second trainer benchmark (below).
#   ONLY="check peer summary" bash scripts/gpu/call.sh
set -u
cd "$(dirname "$0")/../.."
R=/tmp/owlet-results
rm -rf "$R" && mkdir -p "$R"
# The stages' own limits add up to more than one device call may take (600 s): the whole call stops at DEADLINE
# seconds (default 540) so that the packing below always runs and what finished comes back.
DEADLINE=${DEADLINE:-540}
START=$SECONDS
left() { local l=$((DEADLINE - (SECONDS - START))); echo $((l > 1 ? l : 1)); }  # (timeout 0 would mean none)
OUT=$R ONLY="${ONLY:-smoke check peer summary sanitizer sass ncu}" timeout -k 5 "$(left)" bash scripts/gpu/run.sh >"$R/stdout.log" 2>&1 ||
  echo "run.sh exit $? (124: stopped at the ${DEADLINE}-s deadline)" | tee -a "$R/run.log"
# VARIANT_ENV="NAME=value …": the trainer benchmark once more with those variables (e.g. a kernel variant), in
# variant/, so that its steps compare with the default's of the same call; several sets separated by ';' run one after
# the other, in variant/, variant2/, … (e.g. VARIANT_ENV="OWLET_NORM_ROWS=block;OWLET_WORKING_COPIES=0").
IFS=';' read -ra VARIANTS <<<"${VARIANT_ENV:-}"
for i in "${!VARIANTS[@]}"; do
  [ -n "${VARIANTS[$i]// /}" ] && [ "$(left)" -gt 20 ] || continue
  dir="$R/variant$([ "$i" -gt 0 ] && echo $((i + 1)))"
  mkdir -p "$dir"
  echo "${VARIANTS[$i]}" >"$dir/env.txt"
  env ${VARIANTS[$i]} OUT=$dir ONLY=train TRAIN_ARGS=--no-tiny timeout -k 5 "$(left)" bash scripts/gpu/run.sh \
    >"$dir/stdout.log" 2>&1
  echo "variant ${VARIANTS[$i]}:"
  grep -E "^BENCH" "$dir/train_check.log" | cut -c1-200
done
tar -C /tmp -czf "$OUT/results.tgz" owlet-results
grep -E "^== |passed, .* failed|^FAIL" "$R/run.log" "$R/check.log" 2>/dev/null | tail -40
cat "$R/summary.log" 2>/dev/null
cat "$R/steps.log" 2>/dev/null
# the attention kernels' instruction counts (sass stage): one line of totals per kernel
grep -A1 "attention" "$R/sass_attention.txt" 2>/dev/null | grep -E "^(void|  instructions)" | cut -c1-160 | head -40
