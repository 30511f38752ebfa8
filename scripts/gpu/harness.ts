// Shared pieces of the GPU check: calling an op on a backend by name, moving float64 values in and out as
// f32/bf16/i32, bf16 rounding, and the comparison metric of test/helpers/tolerances.ts extended to matching
// infinities.
import type { NativeBackend, NativeTensor } from '../../lib/native.ts';
import { relMaxError } from '../../test/helpers/tolerances.ts';

export type NT = NativeTensor;
export type Be = NativeBackend;
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type AnyFn = (...args: any[]) => any;

/** The op is not in this backend (an addon built from a tree without that family's binding). */
export class Missing extends Error {}

export function op(be: Be, name: string): AnyFn {
  const f = (be as unknown as Record<string, unknown>)[name];
  if (typeof f !== 'function') throw new Missing(`the ${be.backend} backend has no op ${name}`);
  return f as AnyFn;
}

const f32buf = new Float32Array(1);
const u32buf = new Uint32Array(f32buf.buffer);
/** Round to the nearest bf16 (ties to even), as the runtime's f32_to_bf16 does. */
export function bf16Round(x: number): number {
  f32buf[0] = x;
  const u = u32buf[0];
  if ((u & 0x7fffffff) > 0x7f800000) return f32buf[0];
  u32buf[0] = ((u + 0x7fff + ((u >>> 16) & 1)) >>> 0) & 0xffff0000;
  return f32buf[0];
}

export type Kind = 'float' | 'f32' | 'i32';

/** Uploads values: 'float' inputs as `dtype`, 'f32' inputs always f32, 'i32' as int32. */
export function put(be: Be, values: Float64Array, shape: number[], kind: Kind, dtype: 'f32' | 'bf16'): NT {
  if (kind === 'i32') return be.fromBuffer('i32', shape, Int32Array.from(values));
  const f = be.fromBuffer('f32', shape, Float32Array.from(values));
  if (kind === 'f32' || dtype === 'f32') return f;
  try { return be.cast(f, 'bf16'); } finally { f.dispose(); }
}

/** Values of any tensor as float64 (bf16 through a cast on the owning backend). */
export function get(be: Be, t: NT): Float64Array {
  if (t.dtype === 'f32') return Float64Array.from(new Float32Array(t.read()));
  if (t.dtype === 'i32') return Float64Array.from(new Int32Array(t.read()));
  const f = be.cast(t, 'f32');
  try { return Float64Array.from(new Float32Array(f.read())); } finally { f.dispose(); }
}

/** relMaxError, with positions where both sides hold the same infinity counted as exact (lse of empty rows). */
export function relErr(got: ArrayLike<number>, want: ArrayLike<number>, floor: number): number {
  if (got.length !== want.length) return Infinity;
  const g = Float64Array.from(got), w = Float64Array.from(want);
  for (let i = 0; i < w.length; i++) {
    if (!Number.isFinite(w[i]) && w[i] === g[i]) { w[i] = 0; g[i] = 0; }
  }
  return relMaxError(g, w, floor);
}

/** Median of a list of numbers. */
export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.floor(s.length / 2)] : NaN;
}

export function fmt(x: number): string {
  return Number.isFinite(x) ? x.toExponential(1) : String(x);
}

/** Kernel variants the CUDA backend reads from the environment per call, e.g. { OWLET_ATTN_FWD: 'm2' }. */
export type VariantEnv = Record<string, string>;

/** The switches of a LoRA variant: '' none (cuBLAS's thin products; the GEMMs through cuBLAS or the fused kernel,
 *  whichever the first call timed faster), 'thin' and 'mma' OWLET_LORA (the thin products' kernels), 'fused' and
 *  'cublas' OWLET_LORA_GEMM (always the GEMM with the rank-r update in it, lora_gemm.cuh, or never), 'fused3' that
 *  GEMM with a 3-stage ring (OWLET_LORA_GEMM_STAGES=3), 'fusedwarp' with each warp storing its rows of C
 *  (OWLET_LORA_GEMM_EPILOGUE=warp), 'fusedl' that GEMM computing its own L too (x Aᵀ, gy B: OWLET_LORA_GEMM=fused-l, rank
 *  8 without dropout; session 20), 'overlap' and 'ring' (with fused or fusedl) its rounds of C but the first going out
 *  during the next tile's first k-steps, or all in one round through the stage of the tile's last k-step
 *  (OWLET_LORA_GEMM_EPILOGUE=overlap / ring; session 21), 'split' their last round split by k-steps
 *  (OWLET_LORA_GEMM_SPLIT=1; session 22), 'ownl' the OWN_L kernels in the timed choice as kOwnLByDefault would put
 *  them (OWLET_LORA_GEMM_OWN_L=1; session 23: 'ownl+ring+split' is the default those sessions' kernels would make),
 *  'gypass' OWLET_LORA_GY=pass (gy B and gyᵀ xa in one pass
 *  over gy, lora_gy_pass.cuh), 'gycublas' OWLET_LORA_GY=cublas (never; unset, timed against cuBLAS's two GEMMs on a shape's
 *  first call); several joined by '+'. */
export function loraEnv(variant: string): VariantEnv {
  const env: VariantEnv = {};
  for (const v of variant.split('+').filter(Boolean)) {
    if (v === 'fused' || v === 'cublas') env.OWLET_LORA_GEMM = v;
    else if (v === 'fusedl') env.OWLET_LORA_GEMM = 'fused-l';
    else if (v === 'fused3') Object.assign(env, { OWLET_LORA_GEMM: 'fused', OWLET_LORA_GEMM_STAGES: '3' });
    else if (v === 'fusedwarp') Object.assign(env, { OWLET_LORA_GEMM: 'fused', OWLET_LORA_GEMM_EPILOGUE: 'warp' });
    else if (v === 'overlap' || v === 'ring') env.OWLET_LORA_GEMM_EPILOGUE = v;
    else if (v === 'split') env.OWLET_LORA_GEMM_SPLIT = '1';
    else if (v === 'ownl') env.OWLET_LORA_GEMM_OWN_L = '1';
    else if (v === 'gypass') env.OWLET_LORA_GY = 'pass';
    else if (v === 'gycublas') env.OWLET_LORA_GY = 'cublas';
    else env.OWLET_LORA = v;
  }
  return env;
}

/** Runs fn with `env` set, restoring the previous values (or their absence) afterwards. Throws instead where
 *  OWLET_SKIP_ENV (KEY=VALUE pairs, comma-separated) names one of its settings: scripts/gpu/run.sh's smoke stage sets
 *  it for the later stages when a new kernel's first checks failed or hung, so that their cases and benchmarks report
 *  the skip instead of hanging again. */
export function withEnv<T>(env: VariantEnv, fn: () => T): T {
  const skip = (process.env.OWLET_SKIP_ENV ?? '').split(',').filter(Boolean);
  for (const [k, v] of Object.entries(env))
    if (skip.includes(`${k}=${v}`)) throw new Error(`skipped: ${k}=${v} is in OWLET_SKIP_ENV`);
  const saved = Object.keys(env).map((k) => [k, process.env[k]] as const);
  const restore = () => {
    for (const [k, v] of saved) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  };
  Object.assign(process.env, env);
  let result: T;
  try { result = fn(); } catch (e) { restore(); throw e; }
  // (an async fn: the variables hold until its promise settles)
  if (result instanceof Promise) return result.finally(restore) as T;
  restore();
  return result;
}

// Short names of the kernel-variant variables, for case labels and benchmark names.
const envShort: Record<string, [label: (v: string) => string, suffix: (v: string) => string]> = {
  OWLET_ATTN_FWD: [(v) => `fwd ${v}`, (v) => `_fwd${v}`],
  OWLET_ATTN_BWD_WARPS: [(v) => `bwd ${v} warps`, (v) => `_bwd${v}w`],
  OWLET_ATTN_BWD: [(v) => `bwd ${v}`, (v) => `_bwd${v}`],
  OWLET_ATTN_TAIL: [(v) => (v === '0' ? 'whole tiles for the tail' : v === '1' ? 'tail kernels for the tail' : `tail ${v}`), (v) => (v === '0' ? '_notail' : `_tail${v}`)],
  OWLET_NORM_ROWS: [(v) => `${v} per row`, (v) => `_${v}rows`],
  OWLET_NORM_PARAMS: [(v) => `parameter gradients in a ${v} pass`, (v) => `_params${v}`],
  OWLET_ATTN_ORDER: [(v) => (v === '0' ? 'launch order' : `block order ${v}`), (v) => (v === '0' ? '_launchorder' : `_order${v}`)],
};

/** ' (fwd m2, bwd 4 warps)' for a case name; '' for no variant. */
export function envLabel(env: VariantEnv): string {
  const parts = Object.entries(env).map(([k, v]) => envShort[k]?.[0](v) ?? `${k}=${v}`);
  return parts.length ? ` (${parts.join(', ')})` : '';
}

/** '_fwdm2_bwd4w' for a benchmark name; '' for no variant. */
export function envSuffix(env: VariantEnv): string {
  return Object.entries(env).map(([k, v]) => envShort[k]?.[1](v) ?? `_${k}=${v}`).join('');
}
