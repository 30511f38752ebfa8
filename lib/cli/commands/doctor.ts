// owlet doctor: what this installation can run on.
import { cpu, cuda } from '../../native.ts';
import { BackendError } from '../../tensor/errors.ts';
import type { CliIO } from '../io.ts';

/** Returns false when the CPU backend cannot load (owlet cannot run at all). */
export function doctorCommand(io: CliIO): boolean {
  io.out(`node ${process.version} (${process.platform}-${process.arch}), N-API ${process.versions.napi}`);
  let ok = true;
  try {
    const info = cpu().info();
    io.out(`cpu backend: ${Object.entries(info).map(([k, v]) => `${k}=${typeof v === 'object' ? JSON.stringify(v) : String(v)}`).join(', ')}`);
  } catch (e) {
    ok = false;
    io.out(`cpu backend: NOT AVAILABLE: ${(e as Error).message}`);
  }
  try {
    const info = cuda().info();
    io.out(`cuda backend: ${Object.entries(info).map(([k, v]) => `${k}=${typeof v === 'object' ? JSON.stringify(v) : String(v)}`).join(', ')}`);
  } catch (e) {
    io.out(`cuda backend: not available: ${e instanceof BackendError ? e.message : String(e)}`);
  }
  // Kernel and path switches change speed (and, for some, the numbers): a run that is slower than it should be may
  // have one set (native/src/cuda/README.md lists them).
  const set = Object.entries(process.env).filter(([k]) => k.startsWith('OWLET_')).sort(([a], [b]) => (a < b ? -1 : 1));
  const switches = set.map(([k, v]) => `${k}=${v}${KNOWN_SWITCHES.has(k) ? '' : ' (not an owlet switch: misspelt?)'}`);
  io.out(`switches: ${switches.length ? switches.join(' ') : 'none (no OWLET_* environment variable is set)'}`);
  return ok;
}

// Every OWLET_* variable owlet reads (native/src/cuda/README.md, lib/dist/env.ts, lib/native.ts, lib/op-profile.ts,
// lib/tensor/tensor.ts, lib/cli/main.ts, lib/train/trainer.ts), so that a misspelt one, which changes nothing, is
// pointed out (test/train/cli.test.ts finds the ones the sources read and checks they are here).
export const KNOWN_SWITCHES: ReadonlySet<string> = new Set([
  'OWLET_ATTENTION', 'OWLET_ATTN_FWD', 'OWLET_ATTN_BWD', 'OWLET_ATTN_BWD_WARPS', 'OWLET_ATTN_TAIL', 'OWLET_ATTN_TUNE', 'OWLET_ATTN_ORDER',
  'OWLET_ATTN_TUNE_SKIP', 'OWLET_SM90A', 'OWLET_LORA', 'OWLET_LORA_GEMM', 'OWLET_LORA_GEMM_STAGES', 'OWLET_LORA_GEMM_EPILOGUE', 'OWLET_LORA_GEMM_SPLIT', 'OWLET_LORA_GEMM_OWN_L', 'OWLET_LORA_GY', 'OWLET_GEMM', 'OWLET_GEMM_TUNE', 'OWLET_NORM_ROWS', 'OWLET_NORM_PARAMS', 'OWLET_VEC', 'OWLET_PINNED', 'OWLET_PROFILE_OPS', 'OWLET_TRACK_TENSORS',
  'OWLET_BGRAD_EPILOGUE', 'OWLET_WORKING_COPIES', 'OWLET_LOWP_GRADS', 'OWLET_PIPELINE',
  'OWLET_NATIVE_CPU', 'OWLET_NATIVE_CUDA', 'OWLET_DIST_OVERLAP', 'OWLET_DIST_BUCKET_MB', 'OWLET_DIST_TIMEOUT',
  'OWLET_DIST_CUDA', 'OWLET_RENDEZVOUS_TIMEOUT', 'OWLET_STORE_PORT', 'OWLET_STORE_HOSTED', 'OWLET_LAUNCHER_PID', 'OWLET_DEBUG',
]);
