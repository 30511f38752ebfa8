#!/bin/bash
# Runs ON the GPU machine, from the repository root, with .gpu/ carried (made by scripts/gpu/build-bundle.sh):
#   bash scripts/gpu/run.sh
# 1. the check: every CUDA op against the CPU backend / float64 references, runtime checks, benchmarks
# 2. the PyTorch peer (LAYERS LLaMA layers) in the same call, 3. owlet/peer ratios, 4. the owl-tiny fixture, NCCL and trainer
# checks, 5. the host's JS and N-API cost per step (host_overhead.log), 6. compute-sanitizer over the small cases,
# 7. the attention kernels' SASS instruction counts; 8. only with
# ONLY containing ncu: Nsight Compute on the attention kernels (ncu_attention.txt); ncu-lora: on one LoRA forward
# and backward's kernels (ncu_lora.txt); ncu-bwd: on one LLaMA-shaped attention backward, with its warps' stall
# reasons (ncu_attention_bwd.txt).
# Logs and JSON go to $OUT: run.log smoke.log check.log peer.log summary.log fixture_cuda.log nccl_check.log train_check.log
# steps.log host_overhead.log sanitizer.log sass_attention.txt owlet_cuda.json peer_torch.json (peer_k.log and
# peer_torch_k.json with PEER_RUNS=N) train_bench.json. Each stage has
# its own time limit; a failing stage does not stop the next. All stages together take longer than one device call may:
# ONLY="train" (or any of smoke check peer summary fixture nccl train host sanitizer sass, space-separated; and the
# stages that run only when named: ncu, ncu-lora, ncu-bwd, bench-lora, ncu-lora-gemm, ncu-lora-source, sanitizer-new,
# racecheck, check-generic) runs just those, e.g. ONLY=train bash scripts/gpu/run.sh;
# TRAIN_ARGS are passed to the trainer check (e.g. "--no-tiny"; OWLET_PROFILE_OPS=1 adds a per-op profile per case).
# LAYERS (default 4): the LLaMA-7B layers of the 7B-sized steps, the peer's and owlet's alike — 4 keeps the call short,
# 32 is the real 7B model (ONLY="peer train" LAYERS=32 TRAIN_ARGS=--no-tiny: about 3–5 minutes on an H200); the peer's
# and the trainer's time limits grow with it.
set -u
cd "$(dirname "$0")/../.."
OUT=${OUT:-$PWD/gpu-out}
export OUT
mkdir -p "$OUT"
G=$PWD/.gpu
T=$(mktemp -d /tmp/owlet-gpu.XXXX)
LOG=$OUT/run.log
say() { echo "== $(date +%T) $*" | tee -a "$LOG"; }
want() { [ -z "${ONLY:-}" ] || [[ " $ONLY " == *" $1 "* ]]; }
asked() { [[ " ${ONLY:-} " == *" $1 "* ]]; }  # (the stages that run only when named)
# the peer's JSON files of this call (PEER_RUNS): peer_torch.json first, whether or not it was written
peer_jsons() { echo "$OUT/peer_torch.json"; ls "$OUT"/peer_torch_[0-9]*.json 2>/dev/null; }
LAYERS=${LAYERS:-4}
STEPS_LIMIT=$((150 + 10 * LAYERS))  # (seconds: the peer's or the trainer check's run, model builds included)

say "machine"
{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv; nvcc --version | tail -1;
  uname -r; } >>"$LOG" 2>&1

say "unpack node and libraries"
xz -dc "$G/node.xz" >"$T/node" && chmod +x "$T/node"
mkdir -p "$T/lib" && tar -C "$T/lib" -xJf "$G/lib.tar.xz"
export LD_LIBRARY_PATH=$T/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
xz -dc "$G/owlet_cuda.node.xz" >"$T/owlet_cuda.node"
export OWLET_NATIVE_CPU=$G/owlet_cpu.node OWLET_NATIVE_CUDA=$T/owlet_cuda.node
"$T/node" --version >>"$LOG" 2>&1 || say "node does not run here"

# The kernels no GPU has run yet, first and alone under a short limit (ONLY="smoke ..."): session 18's warp-specialised
# attention backward (OWLET_ATTN_BWD=wgmma-ws), fused LoRA GEMM (OWLET_LORA_GEMM=fused; session 20's computing its own
# L, =fused-l; session 21's epilogues, OWLET_LORA_GEMM_EPILOGUE=overlap|ring; session 22's split last round,
# OWLET_LORA_GEMM_SPLIT=1) and one pass over LoRA's gy
# (OWLET_LORA_GY=pass). If their checks do not finish, the later stages keep all of them out — of autotuning
# (OWLET_ATTN_TUNE_SKIP, OWLET_LORA_GEMM=cublas) and of the cases and benchmarks that name them (OWLET_SKIP_ENV: those
# report the skip instead of running) — so that a hang costs this stage's limit once instead of every stage's; where
# some cases fail, only the kernels those name.
# (and the sanitizer-new stage's cases)
SMOKE_FILTER='(bwd wgmma-ws)|(fused|gypass)'
# (the settings that select them, for OWLET_SKIP_ENV)
NEW_KERNELS=(OWLET_ATTN_BWD=wgmma-ws OWLET_LORA_GEMM=fused OWLET_LORA_GEMM=fused-l OWLET_LORA_GEMM_OWN_L=1
  OWLET_LORA_GEMM_EPILOGUE=overlap OWLET_LORA_GEMM_EPILOGUE=ring OWLET_LORA_GEMM_SPLIT=1 OWLET_LORA_GY=pass)
if want smoke; then
  say "smoke: the kernels not yet run on a GPU, alone first (smoke.log)"
  timeout -k 5 120 "$T/node" "$G/check.mjs" --no-bench --filter "$SMOKE_FILTER" 2>&1 | tee "$OUT/smoke.log"
  rc=${PIPESTATUS[0]}
  # (a filter that matched nothing checked nothing: test/gpu-smoke-filter.test.ts keeps it in step with the case names)
  # the settings of the kernels to keep out: those whose cases failed; all of them after a crash, a hang, nothing
  # checked or a FAIL that names none of them
  skip=()
  failed() { grep "^FAIL" "$OUT/smoke.log" | grep -qE "$1"; }
  if [ "$rc" = 0 ] && ! grep -q "^0 passed" "$OUT/smoke.log"; then
    failed '\(bwd wgmma-ws\)' && skip+=(OWLET_ATTN_BWD=wgmma-ws)
    failed '\(fused(3|warp)?(\+gypass)?\)' && skip+=(OWLET_LORA_GEMM=fused)
    failed '\(fusedl\)' && skip+=(OWLET_LORA_GEMM=fused-l OWLET_LORA_GEMM_OWN_L=1)
    failed 'overlap\)' && skip+=(OWLET_LORA_GEMM_EPILOGUE=overlap)
    failed 'ring\)' && skip+=(OWLET_LORA_GEMM_EPILOGUE=ring)
    failed 'split\)' && skip+=(OWLET_LORA_GEMM_SPLIT=1)
    failed 'gypass\)' && skip+=(OWLET_LORA_GY=pass)
    grep -q "^FAIL" "$OUT/smoke.log" && [ ${#skip[@]} = 0 ] && skip=("${NEW_KERNELS[@]}")
  else
    skip=("${NEW_KERNELS[@]}")
  fi
  if [ ${#skip[@]} = 0 ]; then
    say "smoke passed"
  else
    # (out of autotuning too: the attention backward's tuning, the fused LoRA GEMM's timed choice)
    [[ " ${skip[*]} " == *" OWLET_ATTN_BWD=wgmma-ws "* ]] && export OWLET_ATTN_TUNE_SKIP=wgmma-ws
    [[ " ${skip[*]} " == *" OWLET_LORA_GEMM=fused "* ]] && export OWLET_LORA_GEMM=cublas
    OWLET_SKIP_ENV=$(IFS=,; echo "${skip[*]}")
    export OWLET_SKIP_ENV
    say "smoke exit $rc, a FAIL or nothing checked: the later stages run with OWLET_SKIP_ENV=$OWLET_SKIP_ENV OWLET_ATTN_TUNE_SKIP=${OWLET_ATTN_TUNE_SKIP:-} OWLET_LORA_GEMM=${OWLET_LORA_GEMM:-}"
  fi
  # (the same for a later run.sh of this call: `source $OUT/smoke.env`, scripts/gpu/next-call.sh)
  for v in OWLET_SKIP_ENV OWLET_ATTN_TUNE_SKIP OWLET_LORA_GEMM; do
    [ -n "${!v:-}" ] && echo "export $v=${!v}"
  done >"$OUT/smoke.env"
fi

if want check; then
  say "check (correctness + benchmarks)"
  timeout -k 5 150 "$T/node" "$G/check.mjs" 2>&1 | tee "$OUT/check.log"
  say "check exit ${PIPESTATUS[0]}"
fi

# The configuration a GPU without the Hopper kernels runs (an A100, an RTX card: the addon's sm_80 code), on this
# card: every op check again with OWLET_SM90A=0, so that attention, LoRA and the rest dispatch to the generic kernels,
# then the owl-tiny fixture the same way (only when named: ONLY="check-generic").
if asked check-generic; then
  say "check, generic kernels (OWLET_SM90A=0)"
  OWLET_SM90A=0 timeout -k 5 150 "$T/node" "$G/check.mjs" --no-bench 2>&1 | tee "$OUT/check_generic.log"
  say "check-generic exit ${PIPESTATUS[0]}"
  OWLET_SM90A=0 timeout -k 5 60 "$T/node" "$G/fixture.mjs" "$G/owl-tiny" cuda 2>&1 | tee "$OUT/fixture_generic.log"
  say "fixture (generic kernels) exit ${PIPESTATUS[0]}"
fi

if want peer; then
  # PEER_RUNS=N (default 1): the peer N times, run k ≥ 2 into peer_k.log and peer_torch_k.json; the summary then takes
  # each of its numbers' median (scripts/gpu/peer-median.ts): the peer's times moved by up to 12% between H200 calls.
  for k in $(seq 1 "${PEER_RUNS:-1}"); do
    sfx=$([ "$k" = 1 ] || echo "_$k")
    say "peer (PyTorch, LAYERS=$LAYERS), run $k"
    mkdir -p "$T/peer$k"
    (cd "$T" && timeout -k 5 "$STEPS_LIMIT" env LAYERS="$LAYERS" OUT="$T/peer$k" python3 "$G/peer_torch.py") 2>&1 |
      tee "$OUT/peer$sfx.log"
    say "peer exit ${PIPESTATUS[0]}"
    cp "$T/peer$k/peer_torch.json" "$OUT/peer_torch$sfx.json" 2>/dev/null || say "peer run $k wrote no JSON"
  done
  echo "$LAYERS" >"$OUT/peer_layers"  # (its JSON does not say)
fi

if want summary; then
  say "summary"
  { "$T/node" "$G/check.mjs" --summary "$OUT/owlet_cuda.json" $(peer_jsons);
    echo "-- failed checks and the count:"; grep -E "^FAIL|passed, .* failed" "$OUT/check.log"; } 2>&1 | tee "$OUT/summary.log"
fi

if want fixture; then
  say "owl-tiny fixture through the CUDA backend"
  timeout -k 5 60 "$T/node" "$G/fixture.mjs" "$G/owl-tiny" cuda 2>&1 | tee "$OUT/fixture_cuda.log" || say "fixture exit $?"
fi

if want nccl; then
  say "NCCL process group, world size 1 (issue 7): collectives and the owl-tiny stage-2 step"
  timeout -k 5 60 "$T/node" "$G/nccl-check.mjs" "$G/owl-tiny" cuda 2>&1 | tee "$OUT/nccl_check.log" || say "nccl-check exit $?"
fi

if want train; then
  say "trainer on CUDA (issue 5/6): owl-tiny steps cpu f32 / cuda f32 / cuda bf16, then 7B-sized steps (LAYERS=$LAYERS)"
  timeout -k 5 "$STEPS_LIMIT" env LAYERS="$LAYERS" "$T/node" "$G/train-check.mjs" "$G/owl-tiny" ${TRAIN_ARGS:-} 2>&1 | tee "$OUT/train_check.log"
  say "train-check exit ${PIPESTATUS[0]}"
  # the steps against the peer's, when it ran into this $OUT (steps.log), saying when the two ran different depths
  if [ -f "$OUT/peer_torch.json" ]; then
    peer_layers=$(cat "$OUT/peer_layers" 2>/dev/null || echo "?")
    if [ "$peer_layers" = "$LAYERS" ]; then echo "(owlet and the peer at $LAYERS LLaMA layers)"
    else echo "NOT COMPARABLE: owlet at $LAYERS LLaMA layers, the peer at $peer_layers"; fi | tee "$OUT/steps.log"
    "$T/node" "$G/check.mjs" --steps "$OUT/train_bench.json" $(peer_jsons) 2>&1 | tee -a "$OUT/steps.log"
  fi
fi

if want host; then
  # JS and N-API per training step on this machine's CPU, one thread (bench/host_overhead.ts at tiny widths on the CPU
  # backend): against the build machine's numbers it says how much slower or faster this host runs what every step
  # queues around its kernels.
  say "host overhead per step on this CPU (the CPU backend at tiny widths, one thread)"
  for s in 1 2; do
    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 timeout -k 5 60 "$T/node" "$G/host-overhead.mjs" --stage $s --steps 30 --split
  done 2>&1 | tee "$OUT/host_overhead.log"
fi

# sanitize NAME TOOL LIMIT [check.mjs options]: compute-sanitizer's TOOL (memcheck; racecheck for shared-memory
# hazards, synccheck for barrier misuse) over check.mjs --quick's cases, its errors and its tail in $OUT/NAME.log. (OWLET_ATTN_TUNE=0: autotuning would run every applicable attention variant three more times per new
# shape, each ~100x slower under the sanitizer; the quick cases name every variant explicitly anyway.)
sanitize() {
  local name=$1 tool=$2 limit=$3
  shift 3
  if ! command -v compute-sanitizer >/dev/null; then say "no compute-sanitizer on this machine"; return; fi
  OWLET_ATTN_TUNE=0 OUT=$T timeout -k 5 "$limit" compute-sanitizer --tool "$tool" --print-limit 20 \
    "$T/node" "$G/check.mjs" --quick "$@" >"$T/$name.full" 2>&1
  echo "sanitizer exit $?" >>"$T/$name.full"
  { grep -E "ERROR SUMMARY|RACECHECK SUMMARY|^=+ (Invalid|Program hit|Error|Address|Race|Barrier|Warning)|FAIL|passed, " \
      "$T/$name.full" | head -40;
    echo "---- tail"; tail -25 "$T/$name.full"; } >"$OUT/$name.log"
  cat "$OUT/$name.log"
}
if want sanitizer; then
  say "compute-sanitizer (memcheck) over the small cases"
  sanitize sanitizer memcheck 60
fi
if want sass; then
  # What the attention kernels compile to (no disassembler on the build machine): per kernel the instruction count and
  # its opcode histogram (scripts/gpu/sass-summary.py), e.g. to see MUFU.EX2 without its subnormal wrapper and the
  # cp.async (LDGSTS) address arithmetic of the tile copies.
  say "sass: instruction counts of the attention kernels (cuobjdump)"
  CUOBJDUMP=$(command -v cuobjdump || ls /usr/local/cuda/bin/cuobjdump 2>/dev/null || true)
  if [ -n "$CUOBJDUMP" ]; then
    "$CUOBJDUMP" -sass "$T/owlet_cuda.node" >"$T/all.sass" 2>&1
    python3 scripts/gpu/sass-summary.py "$T/all.sass" attention >"$OUT/sass_attention.txt" 2>&1
    head -40 "$OUT/sass_attention.txt"
  else
    say "no cuobjdump on this machine"
  fi
fi
NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu 2>/dev/null || true)
# profile NAME LIMIT CHECK_FLAG [ncu options]: Nsight Compute over `check.mjs CHECK_FLAG`'s launches, its report in
# $OUT/NAME.txt (the stages below differ in which launches and which sections).
profile() {
  local name=$1 limit=$2 flag=$3
  shift 3
  if [ -z "$NCU" ]; then say "no ncu on this machine"; return; fi
  timeout -k 5 "$limit" "$NCU" --clock-control none "$@" "$T/node" "$G/check.mjs" "$flag" >"$OUT/$name.txt" 2>&1
  say "$name exit $?"
}
# Only when asked (ONLY="... ncu"): Nsight Compute on the attention kernels (check.mjs --profile-attention's).
# (OWLET_ATTN_TUNE=0: with autotuning the first kernels of each shape are its timing trials — on 2026-11-27 all 8
# profiled kernels were trials of the first forward; the cases name their variants themselves)
if asked ncu; then
  say "ncu: Nsight Compute on the attention kernels (check.mjs --profile-attention)"
  OWLET_ATTN_TUNE=0 profile ncu_attention 200 --profile-attention -k regex:attention --section SpeedOfLight \
    --section Occupancy --section LaunchStats --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis \
    --section WarpStateStats --section SchedulerStats -c 80
fi
# Only when asked (ONLY="... ncu-lora"): Nsight Compute on every kernel of one LoRA forward + backward
# (check.mjs --profile-lora): each kernel's duration and memory throughput, where LoRA's time over the frozen
# linear goes (ncu_lora.txt).
if asked ncu-lora; then
  say "ncu-lora: Nsight Compute on the LoRA kernels (check.mjs --profile-lora)"
  profile ncu_lora 150 --profile-lora --section SpeedOfLight -c 200
fi
# Only when asked (ONLY="... ncu-bwd"): the first two attention backwards of check.mjs --profile-attention (LLaMA B4
# T2048: the Hopper kernel at D = 128, then the warp-specialised one, OWLET_ATTN_BWD=wgmma-ws) with their warp stall
# reasons, source counters and instruction mix (ncu_attention_bwd.txt): where the backward's warps wait.
# (--print-details all: without it the text report leaves out the stall reasons' breakdown — session 17)
if asked ncu-bwd; then
  say "ncu-bwd: Nsight Compute on one LLaMA-shaped attention backward, with stall reasons"
  OWLET_ATTN_TUNE=0 profile ncu_attention_bwd 120 --profile-attention --print-details all \
    -k regex:'attention_bwd_(ws_)?kernel' -c 2 --section SpeedOfLight --section WarpStateStats --section SourceCounters \
    --section InstructionStats --section Occupancy
fi
# Only when asked (ONLY="... bench-lora"): the LoRA benchmarks alone (bench_lora.log), for a short call.
if asked bench-lora; then
  say "bench-lora: the LoRA benchmarks alone (check.mjs --bench-lora)"
  timeout -k 5 150 "$T/node" "$G/check.mjs" --bench-lora >"$OUT/bench_lora.log" 2>&1
  say "bench-lora exit $?"
  grep -E "^BENCH" "$OUT/bench_lora.log" | cut -c1-200
fi
# Only when asked (ONLY="... ncu-lora-gemm"): Nsight Compute on the fused LoRA GEMM alone (4 stages, its own L, the
# ring's and the overlapped epilogues, the warp epilogue, dropout, 3 stages), with launch shape, occupancy, stall
# reasons, scheduler and memory sections (ncu_lora_gemm.txt).
if asked ncu-lora-gemm; then
  say "ncu-lora-gemm: Nsight Compute on the fused LoRA GEMM (check.mjs --profile-lora-gemm)"
  profile ncu_lora_gemm 120 --profile-lora-gemm --print-details all -k regex:lora_gemm_kernel -c 18 \
    --section SpeedOfLight --section LaunchStats --section Occupancy --section WarpStateStats --section SchedulerStats \
    --section MemoryWorkloadAnalysis --section SourceCounters
fi
# Only when asked (ONLY="... ncu-lora-source"): the 4-stage fused LoRA GEMM's forward under Nsight Compute with its
# warps' stall samples per SASS instruction (--page source), to see which instructions the consumers wait at — the
# epilogue's barriers, the ring's mbarrier waits, the products (ncu_lora_source.txt). (Needs an ncu with --page
# source, 2023.3 or later; the machine's is 2025.3.)
if asked ncu-lora-source; then
  say "ncu-lora-source: stall samples per instruction of the fused LoRA GEMM"
  profile ncu_lora_source 90 --profile-lora-gemm -k regex:lora_gemm_kernel -c 1 --section SourceCounters --page source \
    --print-source sass
fi
# Only when asked (ONLY="... sanitizer-new"): compute-sanitizer (memcheck) over the quick cases of the kernels the
# smoke stage names (sanitizer_new.log).
if asked sanitizer-new; then
  say "sanitizer-new: compute-sanitizer over the quick cases of the newest kernels"
  sanitize sanitizer_new memcheck 90 --filter "$SMOKE_FILTER"
fi
# Only when asked (ONLY="... racecheck"): compute-sanitizer's racecheck (shared-memory hazards between a block's
# threads) and synccheck (barriers used wrongly) over the same cases: the warp-specialised kernels' hand-written
# barriers and staging buffers (racecheck.log, synccheck.log). (How far it follows the TMA's and wgmma's async-proxy
# accesses depends on the sanitizer's version; the host emulator checks those — scripts/flash-emu.sh.)
if asked racecheck; then
  say "racecheck, synccheck: compute-sanitizer over the quick cases of the newest kernels"
  sanitize racecheck racecheck 120 --filter "$SMOKE_FILTER"
  sanitize synccheck synccheck 90 --filter "$SMOKE_FILTER"
fi
say "done"
