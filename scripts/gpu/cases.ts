// The correctness cases of the GPU check: every CUDA op, forward and backward, on seeded random inputs of odd sizes
// and of the model's real shapes. Each case runs through the NativeBackend interface on any backend (so the same
// code produces the CPU backend's answer and the CUDA backend's) and has a float64 reference for when the CPU
// backend lacks the op.
import { randn, rng } from '../../test/helpers/rng.ts';
import { type Be, envLabel, get, type Kind, loraEnv, type NT, op, type VariantEnv, withEnv } from './harness.ts';
import * as R from '../../test/helpers/reference.ts';

export interface Input { shape: number[]; values: Float64Array; kind?: Kind }
export type Out = NT | number | boolean | null;
export interface Case {
  name: string;
  family: string;
  /** Storage dtypes of the float inputs to check on CUDA (the CPU reference always runs in f32). */
  dtypes: ('f32' | 'bf16')[];
  /** Small enough for compute-sanitizer. */
  quick?: boolean;
  inputs: () => Input[];
  run: (be: Be, xs: NT[]) => Record<string, Out>;
  ref: (xs: Float64Array[]) => Record<string, Float64Array | number | boolean>;
  /** Outputs compared with the gradient tolerance in bf16. */
  grads?: string[];
  /** Integer outputs (indices) that must be equal (TOL.indices). */
  exact?: string[];
}

let seedCounter = 1;
function gen(...specs: { shape: number[]; std?: number; kind?: Kind; values?: (n: number) => Float64Array }[]) {
  const seed = seedCounter++;
  return (): Input[] => {
    const r = rng(seed * 7919);
    return specs.map((s) => {
      const n = s.shape.reduce((a, b) => a * b, 1);
      return { shape: s.shape, kind: s.kind ?? 'float', values: s.values ? s.values(n) : randn(r, n, s.std ?? 1) };
    });
  };
}
const ints = (seed: number, lo: number, hi: number) => (n: number) => {
  const r = rng(seed);
  return Float64Array.from({ length: n }, () => lo + Math.floor(r() * (hi - lo)));
};
const prod = (s: number[]) => s.reduce((a, b) => a * b, 1);
const both: ('f32' | 'bf16')[] = ['f32', 'bf16'];

export function cases(): Case[] {
  const out: Case[] = [];

  // ---------------------------------------------------------------- elementwise
  out.push({
    name: 'add/mul/scale/axpy broadcast [37,129]+[129]', family: 'elementwise', dtypes: both, quick: true,
    inputs: gen({ shape: [37, 129] }, { shape: [129] }, { shape: [37, 129] }),
    run: (be, [a, b, c]) => {
      const y = be.clone(c);
      op(be, 'axpy')(y, a, -0.75);
      return { add: op(be, 'add')(a, b, 0.5, 2), mul: op(be, 'mul')(a, b), full: op(be, 'add')(a, c, 1, -1),
        scale: op(be, 'scale')(a, 3.25), axpy: y };
    },
    ref: ([a, b, c]) => ({
      add: a.map((v, i) => 0.5 * v + 2 * b[i % 129]), mul: a.map((v, i) => v * b[i % 129]),
      full: a.map((v, i) => v - c[i]), scale: a.map((v) => 3.25 * v), axpy: c.map((v, i) => v - 0.75 * a[i]),
    }),
  });
  // (4112 × 300: 65 row chunks, a part-filled last column tile)
  for (const shape of [[37, 5, 129], [1000, 96], [4112, 300]]) {
    out.push({
      name: `sumRows ${JSON.stringify(shape)}`, family: 'elementwise', dtypes: both, quick: shape[0] < 100,
      inputs: gen({ shape }),
      run: (be, [x]) => ({ y: op(be, 'sumRows')(x, [shape[shape.length - 1]]) }),
      ref: ([x]) => {
        const C = shape[shape.length - 1], y = new Float64Array(C);
        for (let i = 0; i < x.length; i++) y[i % C] += x[i];
        return { y };
      },
    });
  }

  // ---------------------------------------------------------------- gemm
  for (const [ta, tb] of [[false, false], [true, false], [false, true], [true, true]] as const) {
    const B = 3, M = 37, K = 65, N = 29;
    out.push({
      name: `matmul batched ta=${ta} tb=${tb} [3,37,65,29]`, family: 'gemm', dtypes: both, quick: true,
      inputs: gen({ shape: ta ? [B, K, M] : [B, M, K] }, { shape: tb ? [B, N, K] : [B, K, N] }),
      run: (be, [a, b]) => ({ c: op(be, 'matmul')(a, b, ta, tb, 1) }),
      ref: ([a, b]) => ({ c: R.matmulRef(a, b, B, M, K, N, ta, tb, false) }),
    });
  }
  for (const ta of [false, true]) {
    const B = 4, M = 19, K = 33, N = 45;
    out.push({
      name: `matmul shared 2-D b ta=${ta} tb=true`, family: 'gemm', dtypes: both, quick: true,
      inputs: gen({ shape: ta ? [B, K, M] : [B, M, K] }, { shape: [N, K] }),
      run: (be, [a, b]) => ({ c: op(be, 'matmul')(a, b, ta, true, 0.5) }),
      ref: ([a, b]) => ({ c: R.matmulRef(a, b, B, M, K, N, ta, true, true).map((v) => 0.5 * v) }),
    });
  }
  out.push({
    name: 'matmulInto accumulate (beta=1) [257,1024]x[768,1024]ᵀ', family: 'gemm', dtypes: both,
    inputs: gen({ shape: [257, 1024], std: 0.1 }, { shape: [768, 1024], std: 0.1 }, { shape: [257, 768] }),
    run: (be, [a, b, c]) => {
      const y = be.clone(c);
      op(be, 'matmulInto')(y, a, b, false, true, 1, 1);
      return { c: y };
    },
    ref: ([a, b, c]) => {
      const y = R.matmulRef(a, b, 1, 257, 1024, 768, false, true, true);
      return { c: y.map((v, i) => v + c[i]) };
    },
  });

  // linearForward: x wᵀ + bias. [256,1024]×[768,1024]ᵀ takes cuBLASLt's bias epilogue in bf16; [37,129] rows are not
  // 16-byte multiples, so that one takes the plain GEMM and a separate bias add.
  for (const [M, K, N] of [[256, 1024, 768], [37, 129, 65]] as const) {
    out.push({
      name: `linearForward x[${M},${K}] w[${N},${K}]ᵀ + bias[${N}]`, family: 'gemm', dtypes: both, quick: K < 200,
      inputs: gen({ shape: [M, K], std: 0.1 }, { shape: [N, K], std: 0.1 }, { shape: [N] }),
      run: (be, [x, w, b]) => ({ y: op(be, 'linearForward')(x, w, b) }),
      ref: ([x, w, b]) => ({ y: R.matmulRef(x, w, 1, M, K, N, false, true, true).map((v, i) => v + b[i % N]) }),
    });
  }

  // linearWeightGrad: a linear layer's gyᵀ x and bias gradient. In bf16 at 16-byte rows the bias gradient comes from
  // cuBLASLt's BGRADB epilogue (OWLET_BGRAD_EPILOGUE=0: from sumRows); [37,129] takes the plain GEMM and sumRows.
  for (const [M, K, N, env] of [[300, 64, 96, {}], [300, 64, 96, { OWLET_BGRAD_EPILOGUE: '0' }], [4112, 1024, 256, {}],
    [37, 129, 65, {}]] as [number, number, number, VariantEnv][]) {
    out.push({
      name: `linearWeightGrad gy[${M},${N}]ᵀ x[${M},${K}] + bias gradient${envLabel(env)}`, family: 'gemm', dtypes: both,
      quick: M < 1000,
      inputs: gen({ shape: [M, N], std: 0.1 }, { shape: [M, K], std: 0.1 }),
      run: (be, [gy, x]) => withEnv(env, () => {
        const [gw, gb] = op(be, 'linearWeightGrad')(gy, x, true);
        return { gw, gb };
      }),
      ref: ([gy, x]) => ({
        gw: R.matmulRef(gy, x, 1, N, M, K, true, false, true),
        gb: Float64Array.from({ length: N }, (_, n) => { let s = 0; for (let r = 0; r < M; r++) s += gy[r * N + n]; return s; }),
      }),
    });
  }

  // ---------------------------------------------------------------- layout and tensor ops
  out.push({
    name: 'concat/slice/sliceAssign(acc) axis 1', family: 'layout', dtypes: both, quick: true,
    inputs: gen({ shape: [2, 3, 5] }, { shape: [2, 4, 5] }),
    run: (be, [a, b]) => {
      const c = op(be, 'concat')([a, b], 1);
      const s = op(be, 'slice')(c, 1, 2, 4);
      const d = be.clone(c);
      op(be, 'sliceAssign')(d, a, 1, 4, true);
      return { concat: c, slice: s, assign: d };
    },
    ref: ([a, b]) => {
      const c = new Float64Array(2 * 7 * 5);
      for (let o = 0; o < 2; o++) {
        c.set(a.subarray(o * 15, o * 15 + 15), o * 35);
        c.set(b.subarray(o * 20, o * 20 + 20), o * 35 + 15);
      }
      const s = new Float64Array(2 * 4 * 5);
      for (let o = 0; o < 2; o++) s.set(c.subarray(o * 35 + 10, o * 35 + 30), o * 20);
      const d = Float64Array.from(c);
      for (let o = 0; o < 2; o++) for (let j = 0; j < 15; j++) d[o * 35 + 20 + j] += a[o * 15 + j];
      return { concat: c, slice: s, assign: d };
    },
  });
  out.push({
    name: 'gatherRows/scatterRows(acc, repeats) [50,33]', family: 'layout', dtypes: both, quick: true,
    inputs: gen({ shape: [50, 33] }, { shape: [9], kind: 'i32', values: () => Float64Array.from([3, 0, 49, 3, 7, 7, 7, 12, 3]) },
      { shape: [9, 33] }),
    run: (be, [src, idx, g]) => {
      const dst = be.full(src.dtype, [50, 33], 0.5);
      op(be, 'scatterRows')(dst, idx, g, true);
      return { gather: op(be, 'gatherRows')(src, idx), scatter: dst };
    },
    ref: ([src, idx, g]) => {
      const gather = new Float64Array(9 * 33), scatter = new Float64Array(50 * 33).fill(0.5);
      for (let i = 0; i < 9; i++)
        for (let j = 0; j < 33; j++) {
          gather[i * 33 + j] = src[idx[i] * 33 + j];
          scatter[idx[i] * 33 + j] += g[i * 33 + j];
        }
      return { gather, scatter };
    },
  });
  // Rows of 512 bytes or more (row_gather.cuh's 16-byte kernels, session 14): gather with repeats, scatter-copy.
  out.push({
    name: 'gatherRows/scatterRows(copy) [20,256]', family: 'layout', dtypes: both, quick: true,
    inputs: gen({ shape: [20, 256] }, { shape: [6], kind: 'i32', values: () => Float64Array.from([3, 0, 19, 3, 7, 12]) },
      { shape: [4, 256] }, { shape: [4], kind: 'i32', values: () => Float64Array.from([5, 0, 19, 8]) }),
    run: (be, [src, idx, g, sidx]) => {
      const dst = be.full(src.dtype, [20, 256], 0.5);
      op(be, 'scatterRows')(dst, sidx, g, false);
      return { gather: op(be, 'gatherRows')(src, idx), scatter: dst };
    },
    ref: ([src, idx, g, sidx]) => {
      const gather = new Float64Array(6 * 256), scatter = new Float64Array(20 * 256).fill(0.5);
      for (let i = 0; i < 6; i++) for (let j = 0; j < 256; j++) gather[i * 256 + j] = src[idx[i] * 256 + j];
      for (let i = 0; i < 4; i++) for (let j = 0; j < 256; j++) scatter[sidx[i] * 256 + j] = g[i * 256 + j];
      return { gather, scatter };
    },
  });
  out.push({
    name: 'patchify [2,3,28,42] p=14', family: 'layout', dtypes: both, quick: true,
    inputs: gen({ shape: [2, 3, 28, 42] }),
    run: (be, [img]) => ({ y: op(be, 'patchify')(img, 14) }),
    ref: ([img]) => {
      const N = 2, C = 3, H = 28, W = 42, p = 14, gh = 2, gw = 3, feat = C * p * p, y = new Float64Array(N * gh * gw * feat);
      for (let n = 0; n < N; n++) for (let a = 0; a < gh; a++) for (let b = 0; b < gw; b++)
        for (let c = 0; c < C; c++) for (let yy = 0; yy < p; yy++) for (let xx = 0; xx < p; xx++)
          y[((n * gh + a) * gw + b) * feat + (c * p + yy) * p + xx] = img[((n * C + c) * H + a * p + yy) * W + b * p + xx];
      return { y };
    },
  });
  out.push({
    name: 'cast f32->bf16->f32, i32->f32, fill', family: 'tensor', dtypes: ['f32'], quick: true,
    inputs: gen({ shape: [1000], std: 3 }, { shape: [17], kind: 'i32', values: ints(5, -1000, 1000) }),
    run: (be, [x, i]) => {
      const b = be.cast(x, 'bf16');
      const f = be.full('bf16', [7], -2.75);
      try {
        return { bf16: be.cast(b, 'f32'), int: be.cast(i, 'f32'), fill: be.cast(f, 'f32') };
      } finally {
        b.dispose();  // the 2014 bytes the first GPU runs reported as held: this case's, not the backend's
        f.dispose();
      }
    },
    ref: ([x, i]) => ({ bf16: x.map((v) => bf16RoundLocal(v)), int: Float64Array.from(i), fill: new Float64Array(7).fill(-2.75) }),
  });

  out.push({
    name: 'castMany f32->bf16 then bf16->f32, 3 tensors (one over 2 chunks) and an empty one', family: 'tensor', dtypes: ['f32'], quick: true,
    inputs: gen({ shape: [1000], std: 3 }, { shape: [70001] }, { shape: [3, 5] }),
    run: (be, [x, y, z]) => {
      const e = be.empty('f32', [0]);
      const down = be.castMany([x, y, e, z], 'bf16');
      const up = be.castMany(down, 'f32');
      const empty = up[2].shape[0] === 0 && up[2].dtype === 'f32';
      for (const t of [e, ...down, up[2]]) t.dispose();
      return { x: up[0], y: up[1], z: up[3], empty };
    },
    ref: ([x, y, z]) => ({ x: x.map(bf16RoundLocal), y: y.map(bf16RoundLocal), z: z.map(bf16RoundLocal), empty: true }),
  });

  // ---------------------------------------------------------------- norms
  for (const [rows, C, affine] of [[37, 129, true], [37, 129, false], [64, 1024, true], [700, 136, true]] as const) {
    out.push({
      name: `layerNorm fwd+bwd [${rows},${C}]${affine ? '' : ' no affine'}`, family: 'norm', dtypes: both, quick: C < 200,
      inputs: gen({ shape: [rows, C], std: 2 }, { shape: [C] }, { shape: [C] }, { shape: [rows, C] }),
      run: (be, [x, w, b, gy]) => {
        const [y, mean, rstd] = op(be, 'layerNormForward')(x, affine ? w : null, affine ? b : null, 1e-5);
        const [gx, gw, gb] = op(be, 'layerNormBackward')(gy, x, affine ? w : null, mean, rstd, true, affine);
        return { y, mean, rstd, gx, gw, gb };
      },
      ref: ([x, w, b, gy]) => {
        const r = R.layerNormRef(x, affine ? w : null, affine ? b : null, rows, C, 1e-5, gy);
        return affine ? r : { y: r.y, mean: r.mean, rstd: r.rstd, gx: r.gx };
      },
      grads: ['gx', 'gw', 'gb'],
    });
  }
  for (const [rows, C] of [[37, 129], [16, 4096]] as const) {
    out.push({
      name: `rmsNorm fwd+bwd [${rows},${C}]`, family: 'norm', dtypes: both, quick: C < 200,
      inputs: gen({ shape: [rows, C], std: 2 }, { shape: [C] }, { shape: [rows, C] }),
      run: (be, [x, w, gy]) => {
        const [y, rstd] = op(be, 'rmsNormForward')(x, w, 1e-6);
        const [gx, gw] = op(be, 'rmsNormBackward')(gy, x, w, rstd, true, true);
        return { y, rstd, gx, gw };
      },
      ref: ([x, w, gy]) => R.rmsNormRef(x, w, rows, C, 1e-6, gy),
      grads: ['gx', 'gw'],
    });
  }

  // The residual add fused into the norm (sum = x + r normalised; the backward adds gAdd into gx): a warp per row for
  // rows of up to 1024 bf16 / 512 f32 (the default since session 17; 37 × 136 leaves the last block with spare warps),
  // with OWLET_NORM_ROWS=block a block per row for them too, a block per row for the rest. Where a warp takes the row,
  // the backward's weight and bias gradients come from gx's pass (norm_rows::bwd_params_kernel, session 17: 64 × 1024
  // in blocks of 16 rows, 700 × 136 in 44), and with OWLET_NORM_PARAMS=separate from reduce_cols' own pass.
  for (const [rows, C, env] of [[37, 129, {}], [64, 1024, {}], [37, 136, {}],
    [64, 1024, { OWLET_NORM_ROWS: 'block' }], [64, 1024, { OWLET_NORM_PARAMS: 'separate' }],
    [700, 136, {}]] as [number, number, VariantEnv][]) {
    out.push({
      name: `layerNorm + residual fwd+bwd [${rows},${C}]${envLabel(env)}`, family: 'norm', dtypes: both, quick: C < 200,
      inputs: gen({ shape: [rows, C], std: 2 }, { shape: [rows, C] }, { shape: [C] }, { shape: [C] }, { shape: [rows, C] }, { shape: [rows, C] }),
      run: (be, [x, r, w, b, gy, ga]) => withEnv(env, () => {
        const [y, mean, rstd, sum] = op(be, 'layerNormForward')(x, w, b, 1e-5, r);
        const [gx, gw, gb] = op(be, 'layerNormBackward')(gy, sum, w, mean, rstd, true, true, ga);
        return { y, mean, rstd, sum, gx, gw, gb };
      }),
      ref: ([x, r, w, b, gy, ga]) => {
        const sum = x.map((v, i) => v + r[i]);
        const ref = R.layerNormRef(sum, w, b, rows, C, 1e-5, gy);
        return { ...ref, sum, gx: ref.gx.map((v: number, i: number) => v + ga[i]) };
      },
      grads: ['gx', 'gw', 'gb'],
    });
    out.push({
      name: `rmsNorm + residual fwd+bwd [${rows},${C}]${envLabel(env)}`, family: 'norm', dtypes: both, quick: C < 200,
      inputs: gen({ shape: [rows, C], std: 2 }, { shape: [rows, C] }, { shape: [C] }, { shape: [rows, C] }, { shape: [rows, C] }),
      run: (be, [x, r, w, gy, ga]) => withEnv(env, () => {
        const [y, rstd, sum] = op(be, 'rmsNormForward')(x, w, 1e-6, r);
        const [gx, gw] = op(be, 'rmsNormBackward')(gy, sum, w, rstd, true, true, ga);
        return { y, rstd, sum, gx, gw };
      }),
      ref: ([x, r, w, gy, ga]) => {
        const sum = x.map((v, i) => v + r[i]);
        const ref = R.rmsNormRef(sum, w, rows, C, 1e-6, gy);
        return { ...ref, sum, gx: ref.gx.map((v: number, i: number) => v + ga[i]) };
      },
      grads: ['gx', 'gw'],
    });
  }

  // ---------------------------------------------------------------- rope
  for (const D of [64, 128]) {
    const B = 2, T = 7, H = 3, pos0 = 5;
    out.push({
      name: `rope fwd+bwd [2,7,3,${D}] pos0=5`, family: 'rope', dtypes: both, quick: true,
      inputs: gen({ shape: [B, T, H, D] }, { shape: [B, T, H, D] }),
      run: (be, [x, gy]) => ({ y: op(be, 'ropeForward')(x, pos0, 10000), gx: op(be, 'ropeBackward')(gy, pos0, 10000) }),
      ref: ([x, gy]) => ({ y: R.ropeRef(x, B, T, H, D, pos0, 10000, 1), gx: R.ropeRef(gy, B, T, H, D, pos0, 10000, -1) }),
    });
  }

  // ---------------------------------------------------------------- activations, softmax, dropout
  out.push({
    name: 'quickGelu (and its backward with the forward again)/silu/swiglu fwd+bwd [37,129]', family: 'act', dtypes: both, quick: true,
    inputs: gen({ shape: [37, 129], std: 2 }, { shape: [37, 129], std: 2 }, { shape: [37, 129] }),
    run: (be, [x, u, gy]) => {
      const [gg, gu] = op(be, 'swigluBackward')(gy, x, u);
      const [qbx, qby] = op(be, 'quickGeluBackwardForward')(gy, x);
      const qg = op(be, 'quickGeluForward')(x), qgx = op(be, 'quickGeluBackward')(gy, x);
      // the fused pass gives the bits of the two separate ones (quickGeluLinear's backward relies on it)
      const bits = (t: NT) => Buffer.from(t.read()).toString('hex');
      const fusedSame = bits(qbx) === bits(qgx) && bits(qby) === bits(qg) ? 1 : 0;
      return {
        qg, qgx, qbx, qby, fusedSame,
        si: op(be, 'siluForward')(x), six: op(be, 'siluBackward')(gy, x),
        sw: op(be, 'swigluForward')(x, u), swg: gg, swu: gu,
      };
    },
    ref: ([x, u, gy]) => {
      const q = R.quickGeluRef(x, gy), s = R.siluRef(x, gy), w = R.swigluRef(x, u, gy);
      return { qg: q.y, qgx: q.gx, qbx: q.gx, qby: q.y, fusedSame: 1, si: s.y, six: s.gx, sw: w.y, swg: w.ggate, swu: w.gup };
    },
    exact: ['fusedSame'],
  });
  for (const [rows, C] of [[37, 129], [8, 2000]] as const) {
    out.push({
      name: `softmax fwd+bwd [${rows},${C}]`, family: 'act', dtypes: both, quick: C < 200,
      inputs: gen({ shape: [rows, C], std: 3 }, { shape: [rows, C] }),
      run: (be, [x, gy]) => {
        const y = op(be, 'softmaxForward')(x);
        return { y, gx: op(be, 'softmaxBackward')(gy, y) };
      },
      ref: ([x, gy]) => R.softmaxRef(x, rows, C, gy),
      grads: ['gx'],
    });
  }
  out.push({
    name: 'dropout fwd+bwd p=0.3 seed=42 [37,129] (mask = CPU mask)', family: 'act', dtypes: both, quick: true,
    inputs: gen({ shape: [37, 129] }, { shape: [37, 129] }),
    run: (be, [x, gy]) => ({ y: op(be, 'dropoutForward')(x, 0.3, 42), gx: op(be, 'dropoutBackward')(gy, 0.3, 42) }),
    ref: ([x, gy]) => ({ y: R.dropoutRef(x, 0.3, 42), gx: R.dropoutRef(gy, 0.3, 42) }),
  });

  // ---------------------------------------------------------------- attention
  // env: kernel variants set around the calls (OWLET_ATTN_FWD: the forward's tile shape; OWLET_ATTN_BWD_WARPS: the
  // backward's warps per block; OWLET_ATTN_BWD: its queries per step, or the Hopper backward), named in the case.
  const attn = (label: string, B: number, H: number, Tq: number, Tk: number, D: number, causal: boolean, masked: boolean,
    p: number, dtypes: ('f32' | 'bf16')[], quick = false, env: VariantEnv = {}) => {
    const maskVals = (n: number) => {
      const r = rng(991 + Tk);
      const m = Float64Array.from({ length: n }, () => (r() < 0.25 ? 0 : 1));
      for (let j = 0; j < Math.min(Tk, 5); j++) m[j] = 1;
      return m;
    };
    const scale = 1 / Math.sqrt(D);
    out.push({
      name: `attention ${label} B${B} H${H} Tq${Tq} Tk${Tk} D${D}${causal ? ' causal' : ''}${masked ? ' keymask' : ''}${p ? ` dropout${p}` : ''}${envLabel(env)}`,
      family: 'attention', dtypes, quick,
      inputs: gen({ shape: [B, Tq, H, D] }, { shape: [B, Tk, H, D] }, { shape: [B, Tk, H, D] }, { shape: [B, Tq, H, D] },
        { shape: [B, Tk], kind: 'i32', values: maskVals }),
      run: (be, [q, k, v, go, mask]) => withEnv(env, () => {
        const [o, lse] = op(be, 'attentionForward')(q, k, v, masked ? mask : null, causal, scale, p, 77);
        const [gq, gk, gv] = op(be, 'attentionBackward')(q, k, v, o, lse, go, masked ? mask : null, causal, scale, p, 77);
        return { out: o, lse, gq, gk, gv };
      }),
      ref: ([q, k, v, go, mask]) => R.attentionRef(q, k, v, masked ? mask : null, { B, Tq, Tk, H, D }, causal, scale, p, 77, go),
      grads: ['gq', 'gk', 'gv'],
    });
  };
  attn('odd', 2, 3, 37, 45, 64, false, false, 0, both, true);
  attn('odd', 2, 3, 37, 45, 64, true, true, 0, both, true);
  attn('odd', 1, 2, 70, 70, 128, true, false, 0, both, true);
  attn('odd (tensor cores skip empty rows)', 1, 2, 72, 40, 128, true, false, 0, ['bf16'], true);
  attn('odd', 2, 2, 50, 50, 64, false, false, 0.2, both, true);
  attn('odd', 1, 2, 45, 45, 128, true, false, 0.1, ['bf16'], true);
  attn('head dim 40 (plain path)', 1, 2, 33, 47, 40, false, true, 0, both, true);
  attn('odd', 2, 2, 77, 150, 64, false, true, 0.1, ['bf16'], true, { OWLET_ATTN_BWD_WARPS: '8' });
  attn('odd', 1, 2, 100, 140, 128, true, false, 0, ['bf16'], true, { OWLET_ATTN_BWD_WARPS: '4' });
  attn('ViT', 1, 4, 257, 257, 64, false, false, 0, ['bf16']);
  attn('abstractor', 2, 4, 64, 321, 64, false, false, 0, ['bf16']);
  attn('LLaMA', 1, 1, 2048, 2048, 128, true, false, 0, ['bf16']);
  attn('LLaMA padded batch', 2, 2, 512, 512, 128, true, true, 0, ['bf16']);
  // The forward's other tile shapes (w8, w8s, m2: 128 query rows per block; w4s: 64) on the odd shapes: Tk tails,
  // Tq ≠ Tk, several row blocks, a whole 128-row block with nothing visible (causal, Tq − Tk = 130), key mask,
  // dropout; then the model's.
  for (const fwd of ['w4', 'w8', 'w8s', 'm2', 'w4s']) {
    // w4 with the mma.sync backward: the kernels of before session 5 together (the default backward is wgmma now).
    const env: VariantEnv = fwd === 'w4' ? { OWLET_ATTN_FWD: fwd, OWLET_ATTN_BWD: 'mma' } : { OWLET_ATTN_FWD: fwd };
    attn('odd', 2, 3, 37, 45, 64, true, true, 0, ['bf16'], true, env);
    attn('odd', 2, 2, 200, 150, 64, false, true, 0.1, ['bf16'], false, env);
    attn('odd (a row block sees nothing)', 1, 2, 300, 170, 128, true, true, 0, ['bf16'], false, env);
    attn('odd', 1, 2, 45, 45, 128, true, false, 0.1, ['bf16'], true, env);
    attn('odd', 1, 2, 100, 140, 128, true, false, 0, ['bf16'], false, env);
    attn('ViT', 1, 4, 257, 257, 64, false, false, 0, ['bf16'], false, env);
    attn('abstractor', 2, 4, 64, 321, 64, false, false, 0, ['bf16'], false, env);
    attn('LLaMA padded batch', 2, 2, 512, 512, 128, true, true, 0, ['bf16'], false, env);
  }
  // The causal kernels' block order (block_order.h): in 4 sections of the 15 heads (4, 4, 4, 3), in the dispatch's
  // own (one section at this size) and in launch order (OWLET_ATTN_ORDER=0), against the reference; and the order
  // never changes a number: the forward's out and lse and the backward's dK and dV (each block's own, no atomics)
  // bit for bit equal across the three orders (dQ is summed by atomics: its bits may differ).
  for (const env of [{ OWLET_ATTN_ORDER: '4' }, { OWLET_ATTN_ORDER: '0' }] as VariantEnv[])
    attn('block order', 3, 5, 300, 300, 128, true, true, 0, ['bf16'], false, env);
  out.push({
    name: 'attention block order B3 H5 T700 D128 causal: out, lse, dK, dV bit for bit in every order', family: 'attention',
    dtypes: ['bf16'], quick: false,
    inputs: gen({ shape: [3, 700, 5, 128] }, { shape: [3, 700, 5, 128] }, { shape: [3, 700, 5, 128] }, { shape: [3, 700, 5, 128] }),
    run: (be, [q, k, v, go]) => {
      const scale = 1 / Math.sqrt(128);
      const bits = (t: NT) => Buffer.from(t.read()).toString('hex');
      const once = (order: string) => withEnv({ OWLET_ATTN_ORDER: order }, () => {
        const [o, lse] = op(be, 'attentionForward')(q, k, v, null, true, scale, 0, 0);
        const [gq, gk, gv] = op(be, 'attentionBackward')(q, k, v, o, lse, go, null, true, scale, 0, 0);
        const b = [o, lse, gk, gv].map(bits).join('|');
        return { b, o, lse, gq, gk, gv };
      });
      const launch = once('0'), four = once('4'), auto = once('');
      const sameBits = launch.b === four.b && launch.b === auto.b ? 1 : 0;
      for (const r of [launch, four]) [r.o, r.lse, r.gq, r.gk, r.gv].forEach((t) => t.dispose());
      return { out: auto.o, lse: auto.lse, gq: auto.gq, gk: auto.gk, gv: auto.gv, sameBits };
    },
    ref: ([q, k, v, go]) => ({ ...R.attentionRef(q, k, v, null, { B: 3, Tq: 700, Tk: 700, H: 5, D: 128 }, true, 1 / Math.sqrt(128), 0, 0, go), sameBits: 1 }),
    grads: ['gq', 'gk', 'gv'],
    exact: ['sameBits'],
  });
  // The warp-specialised forward's copies by TMA (wgmma-ws-tma) and its persistent form (wgmma-wsp), session 15: the
  // consumers' arithmetic is wgmma-ws's, so out and lse must equal its bits exactly, at D = 128 causal with a key mask
  // and at D = 64 (ViT-like, a row and key tail), each with and without the overlap; the persistent form twice in a
  // row (its work-item counter must be back at zero after each launch).
  for (const [label, B, H, T, D, causal] of [['LLaMA-like', 3, 5, 700, 128, true], ['ViT-like', 2, 4, 257, 64, false]] as const) {
    const scale = 1 / Math.sqrt(D);
    out.push({
      name: `attention ws forward with TMA copies and persistent = cp.async copies, bit for bit ${label} B${B} H${H} T${T} D${D}${causal ? ' causal' : ''} keymask`,
      family: 'attention', dtypes: ['bf16'], quick: D === 64,
      inputs: gen({ shape: [B, T, H, D] }, { shape: [B, T, H, D] }, { shape: [B, T, H, D] }, { shape: [B, T, H, D] },
        { shape: [B, T], kind: 'i32', values: (n) => Float64Array.from({ length: n }, (_, i) => (i % 7 === 3 ? 0 : 1)) }),
      run: (be, [q, k, v, , mask]) => {
        const bits = (t: NT) => Buffer.from(t.read()).toString('hex');
        const fwd = (variant: string) => withEnv({ OWLET_ATTN_FWD: variant }, () =>
          op(be, 'attentionForward')(q, k, v, mask, causal, scale, 0, 0) as NT[]);
        let same = 1, res: NT[] = [];
        for (const [plain, ...others] of [['wgmma-ws', 'wgmma-ws-tma', 'wgmma-wsp', 'wgmma-wsp'],
          ['wgmma-ws-overlap', 'wgmma-ws-tma-overlap', 'wgmma-wsp-overlap', 'wgmma-wsp-overlap']]) {
          const a = fwd(plain), want = a.map(bits).join('|');
          a.forEach((t) => t.dispose());
          for (const other of others) {
            const b = fwd(other);
            if (b.map(bits).join('|') !== want) same = 0;
            if (res.length) b.forEach((t) => t.dispose());
            else res = b;
          }
        }
        return { out: res[0], lse: res[1], sameBits: same };
      },
      ref: ([q, k, v, go, mask]) => {
        const r = R.attentionRef(q, k, v, mask, { B, Tq: T, Tk: T, H, D }, causal, scale, 0, 0, go);
        return { out: r.out, lse: r.lse, sameBits: 1 };
      },
      exact: ['sameBits'],
    });
  }
  // The persistent backward (wgmma-p, session 15): each item's dK and dV come from the same products as wgmma's
  // blocks, so their bits must be equal (dQ is summed by atomics: compared with the reference only); twice in a row.
  out.push({
    name: 'attention persistent backward = wgmma backward, dK and dV bit for bit B3 H5 T700 D128 causal keymask',
    family: 'attention', dtypes: ['bf16'], quick: false,
    inputs: gen({ shape: [3, 700, 5, 128] }, { shape: [3, 700, 5, 128] }, { shape: [3, 700, 5, 128] }, { shape: [3, 700, 5, 128] },
      { shape: [3, 700], kind: 'i32', values: (n) => Float64Array.from({ length: n }, (_, i) => (i % 7 === 3 ? 0 : 1)) }),
    run: (be, [q, k, v, go, mask]) => {
      const scale = 1 / Math.sqrt(128);
      const bits = (t: NT) => Buffer.from(t.read()).toString('hex');
      const [o, lse] = op(be, 'attentionForward')(q, k, v, mask, true, scale, 0, 0);
      const bwd = (variant: string) => withEnv({ OWLET_ATTN_BWD: variant }, () =>
        op(be, 'attentionBackward')(q, k, v, o, lse, go, mask, true, scale, 0, 0) as NT[]);
      const plain = bwd('wgmma'), want = [plain[1], plain[2]].map(bits).join('|');
      plain.forEach((t) => t.dispose());
      let sameBits = 1, res: NT[] = [];
      for (let i = 0; i < 2; i++) {
        const g = bwd('wgmma-p');
        if ([g[1], g[2]].map(bits).join('|') !== want) sameBits = 0;
        if (res.length) g.forEach((t) => t.dispose());
        else res = g;
      }
      return { out: o, lse, gq: res[0], gk: res[1], gv: res[2], sameBits };
    },
    ref: ([q, k, v, go, mask]) => ({ ...R.attentionRef(q, k, v, mask, { B: 3, Tq: 700, Tk: 700, H: 5, D: 128 }, true, 1 / Math.sqrt(128), 0, 0, go), sameBits: 1 }),
    grads: ['gq', 'gk', 'gv'],
    exact: ['sameBits'],
  });
  // The backward at D = 128 stepping by 64 queries (OWLET_ATTN_BWD=br64).
  {
    const env = { OWLET_ATTN_BWD: 'br64' };
    attn('odd', 1, 2, 45, 45, 128, true, false, 0.1, ['bf16'], true, env);
    attn('odd (a row block sees nothing)', 1, 2, 300, 170, 128, true, true, 0, ['bf16'], false, env);
    attn('odd', 2, 2, 77, 150, 128, false, true, 0, ['bf16'], false, env);
    attn('LLaMA padded batch', 2, 2, 512, 512, 128, true, true, 0, ['bf16'], false, env);
  }
  // The Hopper kernels, each variant on one list of shapes chosen for their tiling: causal within one tile and
  // across two with a shift (the lower warpgroup stopping a tile before the upper one), Tq > Tk (rows with no visible
  // key), a key mask with a Tk tail, the upper warpgroup without rows through more key tiles than the ws forward has
  // stages, several key and query blocks, D = 64, dropout (must fall back to the mma.sync kernels), the model's
  // shapes. The quick ones (compute-sanitizer runs them) are the deadlock- and race-prone small shapes.
  //   OWLET_ATTN_FWD=wgmma, wgmma-overlap (softmax overlapping the previous tile's P·V), wgmma-ws (a producer
  //   warpgroup filling a 2-stage K/V ring under full/empty mbarriers, two consumer warpgroups taking turns),
  //   wgmma-ws-overlap (that with the softmax overlapping the previous tile's P·V, a 3-stage ring), wgmma-ws-tma and
  //   wgmma-ws-tma-overlap (those two with their copies by TMA boxes from tensor maps), wgmma-wsp and
  //   wgmma-wsp-overlap (those as persistent kernels taking work items from a counter);
  //   OWLET_ATTN_BWD=wgmma (128-key blocks of 2 warpgroups, 64-query steps), =wgmma-p (that as a persistent kernel at
  //   D = 128, wgmma at D = 64), =wgmma-ws (the warp-specialised backward at D = 128 — TMA producer warp, dQ writer
  //   warp with bulk reductions, two consumer warpgroups; session 18 — wgmma at D = 64), =wgmma1 (64-key blocks,
  //   D = 64); and the mma.sync backward after the
  //   Hopper forward, the default forward at D = 128 (OWLET_ATTN_BWD=mma).
  const hopperShapes: [string, number, number, number, number, number, boolean, boolean, number, boolean][] = [
    ['odd', 1, 2, 70, 70, 128, true, false, 0, true],
    ['odd', 1, 2, 100, 140, 128, true, false, 0, true],
    ['odd (rows with no visible key)', 1, 2, 72, 40, 128, true, false, 0, true],
    ['odd', 2, 3, 77, 150, 128, false, true, 0, true],
    ['odd (upper warpgroup idle, 4 key tiles)', 2, 2, 50, 400, 128, false, true, 0, true],
    ['odd', 2, 3, 37, 45, 64, true, true, 0, true],
    ['odd', 1, 2, 190, 600, 64, true, false, 0, true],
    ['odd (dropout: fallback)', 1, 2, 45, 45, 128, true, false, 0.1, true],
    ['odd', 1, 2, 200, 300, 128, false, false, 0, false],
    ['odd', 2, 2, 260, 270, 128, true, true, 0, false],
    ['odd', 1, 2, 150, 200, 64, false, false, 0, false],
    ['ViT', 1, 4, 257, 257, 64, false, false, 0, false],
    ['LLaMA', 1, 1, 2048, 2048, 128, true, false, 0, false],
    ['LLaMA padded batch', 2, 2, 512, 512, 128, true, true, 0, false],
    // 1..4 rows or keys past the last whole 64 (attention_tail.cuh, session 8): the abstractor's 64 + 257 keys,
    // causal with a key mask and both tails, 4 rows and 4 keys.
    ['tail: abstractor', 2, 2, 64, 321, 64, false, false, 0, true],
    ['tail', 2, 2, 132, 130, 64, true, true, 0, true],
    ['tail (4 rows, 4 keys)', 1, 2, 68, 196, 64, true, false, 0, true],
    // the abstractor's heads at batch 2: too few to fill the GPU, so wgmma-q splits the keys into 5 ranges
    ['abstractor, 32 heads', 2, 16, 64, 321, 64, false, false, 0, false],
  ];
  for (const env of [{ OWLET_ATTN_FWD: 'wgmma' }, { OWLET_ATTN_FWD: 'wgmma-overlap' }, { OWLET_ATTN_FWD: 'wgmma-ws' },
    { OWLET_ATTN_FWD: 'wgmma-ws-overlap' }, { OWLET_ATTN_FWD: 'wgmma-ws-tma' }, { OWLET_ATTN_FWD: 'wgmma-ws-tma-overlap' },
    { OWLET_ATTN_FWD: 'wgmma-wsp' }, { OWLET_ATTN_FWD: 'wgmma-wsp-overlap' }, { OWLET_ATTN_BWD: 'wgmma' },
    { OWLET_ATTN_BWD: 'wgmma-p' }, { OWLET_ATTN_BWD: 'wgmma-ws' }, { OWLET_ATTN_FWD: 'wgmma', OWLET_ATTN_BWD: 'mma' }] as VariantEnv[]) {
    for (const [label, B, H, Tq, Tk, D, causal, masked, p, quick] of hopperShapes)
      attn(label, B, H, Tq, Tk, D, causal, masked, p, ['bf16'], quick, env);
  }
  // OWLET_ATTN_FWD=wgmma1 / OWLET_ATTN_BWD=wgmma1: one warpgroup (64 query rows / 64 keys) per block, D = 64 only
  // (session 7).
  for (const [label, B, H, Tq, Tk, D, causal, masked, p, quick] of hopperShapes)
    if (D === 64) attn(label, B, H, Tq, Tk, D, causal, masked, p, ['bf16'], quick, { OWLET_ATTN_FWD: 'wgmma1', OWLET_ATTN_BWD: 'wgmma1' });
  // OWLET_ATTN_BWD=wgmma1-keys: wgmma1 with the 1–4 keys past the last whole 64 taken by the last key block (session
  // 14): every D = 64 shape (those without a key tail run as wgmma1), whole query tiles (OWLET_ATTN_TAIL=0).
  for (const [label, B, H, Tq, Tk, D, causal, masked, p, quick] of hopperShapes)
    if (D === 64) attn(label, B, H, Tq, Tk, D, causal, masked, p, ['bf16'], quick, { OWLET_ATTN_BWD: 'wgmma1-keys', OWLET_ATTN_TAIL: '0' });
  // OWLET_ATTN_BWD=wgmma-bulk: dQ added by bulk reductions from shared memory instead of atomics (session 8).
  for (const [label, B, H, Tq, Tk, D, causal, masked, p, quick] of hopperShapes)
    attn(label, B, H, Tq, Tk, D, causal, masked, p, ['bf16'], quick, { OWLET_ATTN_BWD: 'wgmma-bulk' });
  // OWLET_ATTN_BWD=wgmma-q: the query-major backward for Tq <= 64 (attention_wgmma_bwd_short.cuh, session 8).
  for (const [label, B, H, Tq, Tk, D, causal, masked, p, quick] of hopperShapes)
    if (D === 64 && Tq <= 64) attn(label, B, H, Tq, Tk, D, causal, masked, p, ['bf16'], quick, { OWLET_ATTN_BWD: 'wgmma-q' });
  // OWLET_ATTN_TAIL=1 / 0: the rows and keys past the last whole tile always through attention_tail.cuh's kernels /
  // never (unset, autotuning picks per shape, so either may be what the default cases above ran).
  for (const tail of ['1', '0'])
    for (const [label, B, H, Tq, Tk, D, causal, masked, p, quick] of hopperShapes)
      if (D === 64) attn(label, B, H, Tq, Tk, D, causal, masked, p, ['bf16'], quick, { OWLET_ATTN_TAIL: tail });

  // ---------------------------------------------------------------- packed self-attention (attentionQkv)
  // qkv [B, T, H, 3, D] in one tensor (the ViT's fused projection): the tensor-core kernels read q, k, v in place and
  // write the gradient in qkv's layout (bf16, D = 64 / 128); f32, other head dims and OWLET_ATTENTION=simple go
  // through copies. Against the CPU backend (which copies), at the ViT's shape (batch 2) under the default (tuned,
  // keyed apart from the unpacked calls) and the variants that can run it, and at odd shapes.
  const attnQkv = (label: string, B: number, H: number, T: number, D: number, causal: boolean, masked: boolean, p: number,
    dtypes: ('f32' | 'bf16')[], quick = false, env: VariantEnv = {}) => {
    const scale = 1 / Math.sqrt(D), n = B * T * H * D;
    const maskVals = (m: number) => {
      const r = rng(577 + T);
      const v = Float64Array.from({ length: m }, () => (r() < 0.25 ? 0 : 1));
      for (let j = 0; j < Math.min(T, 5); j++) v[j] = 1;
      return v;
    };
    // part `s` (0 q, 1 k, 2 v) of a packed [B, T, H, 3, D], and three [B, T, H, D] side by side again
    const part = (x: Float64Array, s: number) => Float64Array.from({ length: n }, (_, i) => x[(3 * Math.floor(i / D) + s) * D + i % D]);
    const interleave = (xs: Float64Array[]) => Float64Array.from({ length: 3 * n }, (_, i) => {
      const r = Math.floor(i / (3 * D)), s = Math.floor(i / D) % 3;
      return xs[s][r * D + i % D];
    });
    out.push({
      name: `attentionQkv ${label} B${B} H${H} T${T} D${D}${causal ? ' causal' : ''}${masked ? ' keymask' : ''}${p ? ` dropout${p}` : ''}${envLabel(env)}`,
      family: 'attention', dtypes, quick,
      inputs: gen({ shape: [B, T, H, 3, D] }, { shape: [B, T, H, D] }, { shape: [B, T], kind: 'i32', values: maskVals }),
      run: (be, [qkv, go, mask]) => withEnv(env, () => {
        const [o, lse] = op(be, 'attentionQkvForward')(qkv, masked ? mask : null, causal, scale, p, 77);
        const gqkv = op(be, 'attentionQkvBackward')(qkv, o, lse, go, masked ? mask : null, causal, scale, p, 77);
        return { out: o, lse, gqkv };
      }),
      ref: ([qkv, go, mask]) => {
        const r = R.attentionRef(part(qkv, 0), part(qkv, 1), part(qkv, 2), masked ? mask : null, { B, Tq: T, Tk: T, H, D },
          causal, scale, p, 77, go);
        return { out: r.out, lse: r.lse, gqkv: interleave([r.gq, r.gk, r.gv]) };
      },
      grads: ['gqkv'],
    });
  };
  attnQkv('ViT', 2, 16, 257, 64, false, false, 0, ['bf16']);
  for (const env of [{ OWLET_ATTN_TUNE: '0' }, { OWLET_ATTN_FWD: 'w4s', OWLET_ATTN_BWD: 'mma' },
    { OWLET_ATTN_FWD: 'wgmma', OWLET_ATTN_BWD: 'wgmma', OWLET_ATTN_TAIL: '1' },
    { OWLET_ATTN_FWD: 'wgmma1', OWLET_ATTN_BWD: 'wgmma1', OWLET_ATTN_TAIL: '0' }, { OWLET_ATTN_FWD: 'wgmma-ws' },
    { OWLET_ATTN_FWD: 'wgmma-ws-tma' }, { OWLET_ATTN_FWD: 'wgmma-wsp' },
    { OWLET_ATTN_BWD: 'wgmma-bulk' }, { OWLET_ATTN_BWD: 'wgmma1-keys', OWLET_ATTN_TAIL: '0' }] as VariantEnv[])
    attnQkv('ViT', 2, 16, 257, 64, false, false, 0, ['bf16'], false, env);
  attnQkv('odd', 2, 3, 37, 64, false, false, 0, both, true);
  attnQkv('odd', 2, 3, 45, 128, true, true, 0, both, true);
  attnQkv('odd (tail rows)', 2, 2, 131, 128, true, false, 0, ['bf16'], true, { OWLET_ATTN_TAIL: '1' });
  attnQkv('odd (TMA from the packed layout)', 2, 3, 45, 128, true, true, 0, ['bf16'], true, { OWLET_ATTN_FWD: 'wgmma-ws-tma' });
  attnQkv('odd (persistent, TMA from the packed layout)', 2, 3, 300, 128, true, true, 0, ['bf16'], true, { OWLET_ATTN_FWD: 'wgmma-wsp' });
  attnQkv('odd (short: wgmma-q)', 2, 3, 60, 64, true, true, 0, ['bf16'], true, { OWLET_ATTN_BWD: 'wgmma-q' });
  attnQkv('odd', 2, 2, 50, 64, false, true, 0.2, both, true);
  attnQkv('head dim 40 (copies)', 1, 2, 33, 40, false, true, 0, both, true);
  // The same call packed and split on one backend, and with the variants fixed (OWLET_ATTN_TUNE=0: packed and
  // split calls are tuned apart and might pick different kernels): out, lse, dK and dV bit for bit (dQ is summed by
  // atomics in an order no run repeats, so it is compared with the CPU's like any gradient).
  for (const [label, B, H, T, D, causal] of [['ViT', 2, 16, 257, 64, false], ['odd', 2, 3, 45, 128, true]] as const) {
    const scale = 1 / Math.sqrt(D);
    out.push({
      name: `attentionQkv = split + attention, bit for bit ${label} B${B} H${H} T${T} D${D}${causal ? ' causal' : ''}`,
      family: 'attention', dtypes: ['bf16'], quick: label === 'odd',
      inputs: gen({ shape: [B, T, H, 3, D] }, { shape: [B, T, H, D] }),
      run: (be, [qkv, go]) => withEnv({ OWLET_ATTN_TUNE: '0' }, () => {
        const [o, lse] = op(be, 'attentionQkvForward')(qkv, null, causal, scale, 0, 0);
        const g = op(be, 'attentionQkvBackward')(qkv, o, lse, go, null, causal, scale, 0, 0);
        const parts = [0, 1, 2].map((s) => op(be, 'slice')(qkv, 3, s, 1));
        const [q, k, v] = parts.map((x: NT) => x.view([B, T, H, D]));
        const [o2, lse2] = op(be, 'attentionForward')(q, k, v, null, causal, scale, 0, 0);
        const gs: NT[] = op(be, 'attentionBackward')(q, k, v, o2, lse2, go, null, causal, scale, 0, 0);
        const gviews = gs.map((x) => x.view([B, T, H, 1, D]));
        const g2 = op(be, 'concat')(gviews, 3);
        const bytes = (x: NT) => Buffer.from(x.read());
        const eq = (a: NT, b: NT) => bytes(a).equals(bytes(b));
        const gk = (x: NT) => [1, 2].map((s) => op(be, 'slice')(x, 3, s, 1));
        const [k1, v1] = gk(g), [k2, v2] = gk(g2);
        const res = { out: eq(o, o2), lse: eq(lse, lse2), gk: eq(k1, k2), gv: eq(v1, v2), gqkv: g, gqkvSplit: g2 };
        for (const x of [o, lse, o2, lse2, ...parts, q, k, v, ...gs, ...gviews, k1, v1, k2, v2]) x.dispose();
        return res;
      }),
      ref: ([qkv, go]) => {
        const n = B * T * H * D;
        const part = (x: Float64Array, s: number) => Float64Array.from({ length: n }, (_, i) => x[(3 * Math.floor(i / D) + s) * D + i % D]);
        const r = R.attentionRef(part(qkv, 0), part(qkv, 1), part(qkv, 2), null, { B, Tq: T, Tk: T, H, D }, causal, scale, 0, 0, go);
        const g = Float64Array.from({ length: 3 * n }, (_, i) =>
          [r.gq, r.gk, r.gv][Math.floor(i / D) % 3][Math.floor(i / (3 * D)) * D + i % D]);
        return { out: true, lse: true, gk: true, gv: true, gqkv: g, gqkvSplit: g };
      },
      grads: ['gqkv', 'gqkvSplit'],
    });
  }

  // ---------------------------------------------------------------- lora
  // variant 'thin' sets OWLET_LORA=thin around the CUDA calls (the one-pass thin-product kernels instead of the
  // default cuBLAS path), 'mma' OWLET_LORA=mma (the tensor-core kernels of lora_mma.cuh: bf16, ranks 8 and 16; the f32
  // runs and the other shapes check that they fall back), 'fused' OWLET_LORA_GEMM=fused (lora_gemm.cuh: the GEMM with the
  // rank-r update in its kernel, bf16 at ranks 8 and 16; dx under dropout and everything else falls back; unset, the
  // first call of a shape times it against the cuBLAS path); the CPU backend ignores all three.
  const lora = (M: number, K: number, N: number, r: number, p: number, quick: boolean, variant = '') => {
    out.push({
      name: `lora fwd+bwd M${M} K${K} N${N} r${r}${p ? ` dropout${p}` : ''}${variant ? ` (${variant})` : ''}`,
      family: 'lora', dtypes: both, quick,
      inputs: gen({ shape: [M, K] }, { shape: [N, K], std: 1 / Math.sqrt(K) }, { shape: [r, K], std: 1 / Math.sqrt(K) },
        { shape: [N, r], std: 0.1 }, { shape: [M, N] }),
      run: (be, [x, w, a, b, gy]) => withEnv(loraEnv(variant), () => {
        const [y, xa] = op(be, 'loraForward')(x, w, a, b, 2, p, 5);
        const [gx, ga, gb] = op(be, 'loraBackward')(gy, x, w, a, b, xa, 2, p, 5, true);
        return { y, xa, gx, ga, gb };
      }),
      ref: ([x, w, a, b, gy]) => R.loraRef(x, w, a, b, M, K, N, r, 2, p, 5, gy),
      grads: ['gx', 'ga', 'gb'],
    });
  };
  lora(37, 64, 48, 8, 0, true);
  lora(37, 64, 48, 8, 0.1, true);
  lora(37, 64, 48, 8, 0.1, true, 'thin');
  lora(300, 512, 384, 16, 0, false);
  lora(300, 512, 384, 16, 0, false, 'thin');
  lora(41, 96, 40, 6, 0, true);  // a rank the thin kernels do not take
  // dropout: dx's low-rank part added into gx under the mask in one pass (dx_low_rank_kernel), and with rows that are
  // not 16-byte multiples (K 66: the masked temporary instead) and a rank it does not take
  lora(300, 512, 384, 16, 0.05, false);
  lora(29, 66, 40, 8, 0.1, true);
  lora(41, 96, 40, 6, 0.1, true);
  // the tensor-core thin products: ranks 8 and 16, with and without dropout, rows split into chunks (M 300 at K 512:
  // 3 chunks), and shapes they do not take (K 66: rows not 8-element multiples; rank 6)
  lora(37, 64, 48, 8, 0, true, 'mma');
  lora(37, 64, 48, 8, 0.1, true, 'mma');
  lora(300, 512, 384, 16, 0, false, 'mma');
  lora(300, 512, 384, 16, 0.05, false, 'mma');
  lora(1100, 264, 136, 8, 0.05, false, 'mma');
  lora(29, 66, 40, 8, 0.1, true, 'mma');
  lora(41, 96, 40, 6, 0.1, true, 'mma');
  // the fused GEMM (session 18): one tile and a partial one (M 37), tiles ending inside their 128 rows, 256 columns
  // and 64-deep steps (M 300 K 520 N 264: forward N 264, dx N = K 520), many tiles per block (M 1100), rank 16, dropout
  // (the forward fused; dx through the kernel with the mask on its update, session 19), and shapes it does not take
  // (K 66: rows not 16-byte multiples; rank 6)
  lora(37, 64, 48, 8, 0, true, 'fused');
  lora(300, 520, 264, 8, 0, true, 'fused');
  lora(300, 512, 384, 16, 0, false, 'fused');
  lora(1100, 264, 136, 8, 0, false, 'fused');
  lora(300, 512, 384, 16, 0.05, false, 'fused');
  lora(29, 66, 40, 8, 0.1, true, 'fused');
  lora(41, 96, 40, 6, 0, true, 'fused');
  // and with session 18's 3-stage ring (OWLET_LORA_GEMM_STAGES=3; 4 since session 19)
  lora(300, 520, 264, 8, 0, true, 'fused3');
  lora(1100, 264, 136, 8, 0, false, 'fused3');
  // dx's masked update over many tiles per block (the next tile's mask hashed during the k-steps)
  lora(1100, 264, 136, 8, 0.1, false, 'fused');
  // each warp storing its own rows of C (OWLET_LORA_GEMM_EPILOGUE=warp, session 19): partial tiles, many per block
  lora(300, 520, 264, 8, 0, true, 'fusedwarp');
  lora(1100, 264, 136, 16, 0, false, 'fusedwarp');
  // the fused GEMM computing its own L (x Aᵀ in the forward, gy B in dx; OWLET_LORA_GEMM=fused-l, session 20): column
  // block 0's tiles compute it and the others wait for their row block's flag, dx's also gb's sums and, after its
  // tiles, ga's from x — one tile (M 37), tiles ending inside their rows, columns and k-steps, many tiles per block and
  // row blocks per column block (M 1100), twice in a row (the second call's flags start at the first's epoch), more
  // than 8 row-block pairs and 16-row-block ranges of ga's tail (M 4100); and what it does not take, which falls back:
  // rank 16, dropout, K 66
  lora(37, 64, 48, 8, 0, true, 'fusedl');
  lora(300, 520, 264, 8, 0, true, 'fusedl');
  lora(1100, 264, 136, 8, 0, false, 'fusedl');
  lora(1100, 264, 136, 8, 0, false, 'fusedl');
  lora(4100, 264, 520, 8, 0, false, 'fusedl');
  lora(300, 512, 384, 16, 0, false, 'fusedl');
  lora(300, 512, 384, 8, 0.05, false, 'fusedl');
  lora(29, 66, 40, 8, 0, true, 'fusedl');
  // either with its rounds of C but the first going out during the next tile's first k-steps, or all through the stage
  // of the tile's last k-step, held until the next tile's first (session 21): tiles ending inside their rows and
  // columns, many tiles per block (each carrying rounds or a stage into the next), one k-step (the forward at K 64, dx
  // at N 64: the carried rounds go out before the next tile's first), whole 256-column tiles last on a block (N 512
  // forward; dx's K 512); the fusedl kernels over several 16-row-block ranges (M 4100)
  for (const v of ['fused+overlap', 'fusedl+overlap', 'fused+ring', 'fusedl+ring']) {
    lora(300, 520, 264, 8, 0, true, v);
    lora(1100, 264, 136, 8, 0, false, v);
    lora(1100, 64, 512, 8, 0, false, v);
    lora(1100, 512, 64, 8, 0, false, v);
  }
  lora(4100, 264, 520, 8, 0, false, 'fusedl+overlap');
  lora(4100, 264, 520, 8, 0, false, 'fusedl+ring');
  // the last round split by k-steps (session 22, OWLET_LORA_GEMM_SPLIT=1): 272 pairs of tiles on an H100's or H200's
  // 66 clusters leave 8 for the last round — the forward's at N 4096 (K 136: 3 k-steps; with its own L, none of
  // column block 0's tiles among them), dx's at K 4096 (N 136)
  for (const v of ['fused+ring+split', 'fusedl+ring+split', 'fused+overlap+split']) {
    lora(4100, 136, 4096, 8, 0, false, v);
    lora(4100, 4096, 136, 8, 0, false, v);
  }
  // gy B and gyᵀ xa in one pass over gy (session 18): a partial row block and column tile (M 37 N 48), more column tiles
  // than stages (N 600), rank 16, dropout, with the fused GEMM too, and a rank it does not take (6)
  lora(37, 64, 48, 8, 0, true, 'gypass');
  lora(300, 264, 600, 16, 0, true, 'gypass');
  lora(300, 512, 384, 16, 0.05, false, 'gypass');
  lora(300, 520, 264, 8, 0, true, 'fused+gypass');
  lora(1100, 264, 136, 8, 0.1, false, 'fused+gypass');
  lora(41, 96, 40, 6, 0, true, 'gypass');

  // ---------------------------------------------------------------- loss
  // (V a multiple of 8: 16-byte loads; 1001: element by element)
  for (const [N, V] of [[37, 1000], [8, 32000], [5, 1001]] as const) {
    out.push({
      name: `crossEntropy [${N},${V}] with ignored rows`, family: 'loss', dtypes: both, quick: V < 5000,
      inputs: gen({ shape: [N, V], std: 2 }, {
        shape: [N], kind: 'i32',
        values: (n) => { const v = ints(17 + V, 0, V)(n); v[1] = -100; v[n - 1] = -100; return v; },
      }),
      run: (be, [logits, labels]) => {
        const [loss, dlogits] = op(be, 'crossEntropy')(logits, labels, -100);
        return { loss, dlogits };
      },
      ref: ([logits, labels]) => R.crossEntropyRef(logits, labels, N, V, -100),
      grads: ['dlogits'],
    });
  }
  out.push({
    name: 'mulScalarInplace [37,129] by a device scalar', family: 'loss', dtypes: both, quick: true,
    inputs: gen({ shape: [37, 129] }, { shape: [1], kind: 'f32', values: () => Float64Array.of(-1.375) }),
    run: (be, [x, s]) => {
      const y = be.clone(x);
      op(be, 'mulScalarInplace')(y, s);
      return { y };
    },
    ref: ([x, s]) => ({ y: x.map((v) => v * s[0]) }),
  });
  out.push({
    name: 'crossEntropy, every row ignored', family: 'loss', dtypes: ['f32'], quick: true,
    inputs: gen({ shape: [5, 33] }, { shape: [5], kind: 'i32', values: (n) => new Float64Array(n).fill(-100) }),
    run: (be, [logits, labels]) => {
      const [loss, dlogits] = op(be, 'crossEntropy')(logits, labels, -100);
      return { loss, dlogits };
    },
    ref: () => ({ loss: Float64Array.of(0), dlogits: new Float64Array(5 * 33) }),
  });

  for (const [N, V] of [[37, 1000], [8, 32000]] as const) {
    out.push({
      name: `argmaxRows [${N},${V}] with a tie, a NaN and a row of NaN`, family: 'loss', dtypes: both, quick: V < 5000,
      inputs: gen({ shape: [N, V], values: (n) => {
        const v = randn(rng(V + N), n, 2);
        v[5] = v[V - 2] = 9; // row 0: a tie, the first wins
        v[V] = NaN; v[V + 1] = 12; // row 1: NaN skipped
        v.fill(NaN, 2 * V, 3 * V); // row 2: all NaN → 0
        v[3 * V + 17] = v[3 * V + 18] = 11; // row 3: a tie inside one 16-byte load, the first wins
        return v;
      } }),
      run: (be, [x]) => ({ idx: op(be, 'argmaxRows')(x) }),
      ref: ([x]) => ({ idx: Float64Array.from({ length: N }, (_, r) => {
        let best = -1;
        for (let j = 0; j < V; j++) { const v = x[r * V + j]; if (!Number.isNaN(v) && (best < 0 || v > x[r * V + best])) best = j; }
        return Math.max(best, 0);
      }) }),
      exact: ['idx'],
    });
  }

  // ---------------------------------------------------------------- optimizer
  const sizes = [[37, 13], [129], [1000]];
  out.push({
    name: 'adamw (3 tensors, step 3, clipping scale 0.37), sumSquares, scaleInplace, allFinite', family: 'optim', dtypes: ['f32'], quick: true,
    inputs: gen(...sizes.map((s) => ({ shape: s, kind: 'f32' as Kind })), ...sizes.map((s) => ({ shape: s })),
      ...sizes.map((s) => ({ shape: s, kind: 'f32' as Kind, std: 0.1 })),
      ...sizes.map((s) => ({ shape: s, kind: 'f32' as Kind, values: (n: number) => { const r = rng(n); return Float64Array.from({ length: n }, () => 0.01 * r()); } }))),
    run: (be, xs) => {
      const [p, g, m, v] = [xs.slice(0, 3), xs.slice(3, 6), xs.slice(6, 9), xs.slice(9, 12)];
      const ss = op(be, 'sumSquares')(g);
      const finite = op(be, 'allFinite')(g);
      op(be, 'adamw')(p, g, m, v, [0.1, 0, 0.05], 1e-3, 0.9, 0.999, 1e-8, 3, 0.37);
      const gs = g.map((t) => be.clone(t));
      op(be, 'scaleInplace')(gs, 0.5);
      const bad = be.fromBuffer('f32', [3], Float32Array.of(1, Infinity, 2));
      const notFinite = op(be, 'allFinite')([g[0], bad]);
      bad.dispose();
      return { p0: p[0], p1: p[1], p2: p[2], m0: m[0], m2: m[2], v1: v[1], v2: v[2], ss, finite, notFinite,
        gs0: gs[0], gs1: gs[1], gs2: gs[2] };
    },
    ref: (xs) => {
      const c = xs.map((x) => Float64Array.from(x));
      const [p, g, m, v] = [c.slice(0, 3), c.slice(3, 6), c.slice(6, 9), c.slice(9, 12)];
      let ss = 0;
      for (const t of g) for (const x of t) ss += x * x;
      const wd = [0.1, 0, 0.05];
      const scale = Math.fround(0.37);
      for (let i = 0; i < 3; i++) R.adamwRef(p[i], g[i].map((x) => x * scale), m[i], v[i], wd[i], 1e-3, 0.9, 0.999, 1e-8, 3);
      return { p0: p[0], p1: p[1], p2: p[2], m0: m[0], m2: m[2], v1: v[1], v2: v[2], ss, finite: true,
        notFinite: false, gs0: g[0].map((x) => 0.5 * x), gs1: g[1].map((x) => 0.5 * x), gs2: g[2].map((x) => 0.5 * x) };
    },
  });
  // The trainer's step control block (norm, clipping coefficient, skip) and AdamW reading it on the device; the
  // gradients in the case's dtype (bf16: the trainer's gradients kept in the compute dtype, lowPrecisionLeafGrads).
  const csizes = [[300, 7], [4097]];
  for (const lossBad of [false, true]) {
    out.push({
      name: `stepControl (max norm 0.5${lossBad ? ', a loss is inf: skip' : ''}) and adamw reading it`, family: 'optim', dtypes: both, quick: true,
      inputs: gen(...csizes.map((s) => ({ shape: s, kind: 'f32' as Kind })), ...csizes.map((s) => ({ shape: s }))),
      run: (be, xs) => {
        const [p, g] = [xs.slice(0, 2), xs.slice(2, 4)];
        const m = p.map((t) => be.full('f32', t.shape, 0, t.device));
        const v = p.map((t) => be.full('f32', t.shape, 0, t.device));
        const losses = [be.fromBuffer('f32', [1], Float32Array.of(2.5)), be.fromBuffer('f32', [1], Float32Array.of(lossBad ? Infinity : 1.5))];
        const control = op(be, 'stepControl')(g, losses, 0.5);
        op(be, 'adamw')(p, g, m, v, [0.1, 0], 1e-3, 0.9, 0.999, 1e-8, 1, undefined, control);
        const f = new Float64Array(control.read());
        for (const t of [...losses, ...m, ...v, control]) t.dispose();
        return { p0: p[0], p1: p[1], norm: f[0], coef: f[1], skip: f[2] };
      },
      ref: (xs) => {
        const c = xs.map((x) => Float64Array.from(x));
        const [p, g] = [c.slice(0, 2), c.slice(2, 4)];
        let ss = 0;
        for (const t of g) for (const x of t) ss += x * x;
        const norm = Math.sqrt(ss), coef = Math.min(1, 0.5 / (norm + 1e-6));
        if (!lossBad) {
          const scale = Math.fround(coef);
          for (let i = 0; i < 2; i++) R.adamwRef(p[i], g[i].map((x) => x * scale), new Float64Array(p[i].length), new Float64Array(p[i].length), [0.1, 0][i], 1e-3, 0.9, 0.999, 1e-8, 1);
        }
        return { p0: p[0], p1: p[1], norm, coef, skip: lossBad ? 1 : 0 };
      },
      exact: ['skip'],
    });
  }
  // f32 values uploaded as bf16 (the trainer's pixels): rounded on the host to nearest even, bit for bit as the
  // rounding written out here (specials, ties, subnormals), NaN kept a NaN.
  out.push({
    name: 'fromBuffer bf16 from f32 values (rounded on the host)', family: 'tensor', dtypes: ['f32'], quick: true,
    inputs: gen({ shape: [4099] }),
    run: (be, [x]) => {
      const vals = Float32Array.from(get(be, x));
      vals.set([0, -0, 1 + 2 ** -9, 1 + 3 * 2 ** -9, 3.4e38, 1e-40, Infinity, -Infinity, NaN], 0);
      const t = be.fromBuffer('bf16', [vals.length], vals, x.device);
      const got = new Uint16Array(t.read());
      t.dispose();
      const u = new Uint32Array(vals.buffer);
      let wrong = 0;
      for (let i = 0; i < vals.length; i++) {
        const want = Number.isNaN(vals[i]) ? -1 : ((u[i] + 0x7fff + ((u[i] >>> 16) & 1)) >>> 16) & 0xffff;
        if (want < 0 ? (got[i] & 0x7fff) <= 0x7f80 : got[i] !== want) wrong++;
      }
      return { wrong };
    },
    ref: () => ({ wrong: 0 }),
    exact: ['wrong'],
  });
  // Queued reads (the trainer's results): a read returns the tensors as they were when it was queued, although work
  // queued after it (here: an axpy into one of them, and a GEMM to keep the device busy) runs before the take; a
  // dropped read and an empty one return their tickets.
  out.push({
    name: 'readQueue/readTake: values as queued, not as changed by work queued after', family: 'tensor', dtypes: both, quick: true,
    inputs: gen({ shape: [257, 64] }, { shape: [512, 512] }),
    run: (be, [x, w]) => {
      const y = op(be, 'scale')(x, 2);
      const ticket = op(be, 'readQueue')([y, x]) as unknown as number;
      op(be, 'readDrop')(op(be, 'readQueue')([x]));
      const none = op(be, 'readTake')(op(be, 'readQueue')([])) as unknown as ArrayBuffer[];
      op(be, 'axpy')(y, x, 1);
      const busy = op(be, 'matmul')(w, w);
      const [yb, xb] = op(be, 'readTake')(ticket) as unknown as ArrayBuffer[];
      busy.dispose();
      return { queuedY: be.fromBuffer(y.dtype, y.shape, yb, y.device), queuedX: be.fromBuffer(x.dtype, x.shape, xb, x.device), after: y,
        emptyRead: none.length };
    },
    ref: ([x]) => ({ queuedY: x.map((v) => 2 * v), queuedX: x, after: x.map((v) => 3 * v), emptyRead: 0 }),
    exact: ['emptyRead'],
  });
  return out;
}

function bf16RoundLocal(x: number): number {
  const f = new Float32Array([x]), u = new Uint32Array(f.buffer);
  if ((u[0] & 0x7fffffff) > 0x7f800000) return f[0];
  u[0] = ((u[0] + 0x7fff + ((u[0] >>> 16) & 1)) >>> 0) & 0xffff0000;
  return f[0];
}

export { prod };
