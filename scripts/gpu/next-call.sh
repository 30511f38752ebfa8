#!/bin/bash
# The first device call of the next GPU session, as one script (written in session 23, which had no GPU): what issue 6
# still needs, most important first, each part under its own limit so that a hang costs that part alone.
#   1. smoke: the kernels sessions 20–22 wrote and no GPU has run, alone (≤ 120 s) — $R/smoke;
#   2. the stage steps at the 7B model's real depth, 32 LLaMA layers, the PyTorch peer first at the same depth
#      (steps.log) — $R/deep; where every smoke case passed, under the default those kernels would make
#      (OWLET_LORA_GEMM_OWN_L=1, the ring epilogue, the split last round: what lora.cu's constants would say once a GPU
#      has checked them), else under today's defaults with the failed kernels kept out (smoke.env);
#   3. the LoRA benchmarks (the ≤ 1.08× target), then the fused GEMM's kernels under ncu and compute-sanitizer
#      memcheck over the new kernels' quick cases — $R/lora;
#   4. if time is left, every op check and the owl-tiny fixture through the generic kernels (OWLET_SM90A=0: what an
#      A100 or an RTX card runs) — $R/generic.
# On the GPU machine, from the repository root with .gpu/ carried (scripts/gpu/build-bundle.sh), the device tool's
# timeout_s 590: bash scripts/gpu/next-call.sh. Everything comes back in $OUT/next.tgz; the lines to read first are
# printed at the end.
set -u
cd "$(dirname "$0")/../.."
R=/tmp/owlet-next
rm -rf "$R" && mkdir -p "$R/smoke" "$R/deep" "$R/lora" "$R/generic"
DEADLINE=${DEADLINE:-570}
START=$SECONDS
left() { local l=$((DEADLINE - (SECONDS - START))); echo $((l > 1 ? l : 1)); }
cap() { local l; l=$(left); echo $(($1 < l ? $1 : l)); }  # (a part's own limit, or what is left if less)
part() {  # part NAME LIMIT [VAR=value …]: run.sh into $R/NAME with ONLY etc. from the arguments
  local name=$1 limit=$2
  shift 2
  env "$@" OUT="$R/$name" timeout -k 5 "$(cap "$limit")" bash scripts/gpu/run.sh >"$R/$name/stdout.log" 2>&1 ||
    echo "$name: run.sh exit $? (124: its limit)" >>"$R/notes.txt"
}

part smoke 130 ONLY=smoke
# the kernels to keep out (OWLET_SKIP_ENV …) where a smoke case failed, for the parts below
[ -f "$R/smoke/smoke.env" ] && source "$R/smoke/smoke.env"
candidate=()
grep -q "smoke passed" "$R/smoke/run.log" 2>/dev/null &&
  candidate=(OWLET_LORA_GEMM_OWN_L=1 OWLET_LORA_GEMM_EPILOGUE=ring OWLET_LORA_GEMM_SPLIT=1)
echo "steps under: ${candidate[*]:-the current defaults}" | tee -a "$R/notes.txt"
part deep 300 "${candidate[@]}" LAYERS=32 ONLY="peer train" TRAIN_ARGS=--no-tiny
part lora 200 ONLY="bench-lora ncu-lora-gemm sanitizer-new"
if [ "$(left)" -gt 90 ]; then part generic 220 ONLY=check-generic
else echo "generic left out: $(left) s left" >>"$R/notes.txt"; fi

tar -C /tmp -czf "${OUT:-$R}/next.tgz" owlet-next
cat "$R/notes.txt"
cat "$R"/{smoke,deep,lora,generic}/run.log 2>/dev/null | grep -E "^== "
grep -E "passed, |^FAIL" "$R/smoke/smoke.log" "$R/lora/sanitizer_new.log" "$R/generic/check_generic.log" 2>/dev/null |
  head -30
grep -E "^(PASS|FAIL)" "$R/generic/fixture_generic.log" 2>/dev/null | cut -c1-160
grep -hE "^BENCH lora_M8192_K4096_N(4096|11008)_r8(_|\s)" "$R/lora/bench_lora.log" 2>/dev/null | cut -c1-120
grep -E "^  void|Duration" "$R/lora/ncu_lora_gemm.txt" 2>/dev/null | head -40
cat "$R/deep/steps.log" 2>/dev/null
