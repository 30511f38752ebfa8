#!/bin/bash
# One device call: scripts/gpu/run.sh's stages named in ONLY (default: check peer summary sanitizer ncu), their logs
# packed into $OUT/results.tgz (the device tool returns at most 8 files) and the summary printed last.
#   ONLY="check peer summary" bash scripts/gpu/call.sh
set -u
cd "$(dirname "$0")/../.."
R=/tmp/owlet-results
rm -rf "$R" && mkdir -p "$R"
OUT=$R ONLY="${ONLY:-check peer summary sanitizer ncu}" bash scripts/gpu/run.sh >"$R/stdout.log" 2>&1
tar -C /tmp -czf "$OUT/results.tgz" owlet-results
grep -E "^== |passed, .* failed|^FAIL" "$R/run.log" "$R/check.log" 2>/dev/null | tail -40
cat "$R/summary.log" 2>/dev/null
