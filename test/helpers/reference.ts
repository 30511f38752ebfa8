// Float64 reference implementations of the kernel families, for the op tests and the GPU check. Plain loops over
// flat arrays; each follows the maths in native/src/core/kernels.h.
export type F = Float64Array;

export function matmulRef(a: F, b: F, batch: number, M: number, K: number, N: number, ta: boolean, tb: boolean,
  sharedB: boolean): F {
  const out = new Float64Array(batch * M * N);
  for (let z = 0; z < batch; z++) {
    const ao = z * M * K, bo = sharedB ? 0 : z * K * N;
    for (let i = 0; i < M; i++)
      for (let j = 0; j < N; j++) {
        let s = 0;
        for (let k = 0; k < K; k++) s += a[ao + (ta ? k * M + i : i * K + k)] * b[bo + (tb ? j * K + k : k * N + j)];
        out[z * M * N + i * N + j] = s;
      }
  }
  return out;
}

export function layerNormRef(x: F, w: F | null, b: F | null, rows: number, C: number, eps: number, gy: F) {
  const y = new Float64Array(x.length), mean = new Float64Array(rows), rstd = new Float64Array(rows);
  const gx = new Float64Array(x.length), gw = new Float64Array(C), gb = new Float64Array(C);
  for (let r = 0; r < rows; r++) {
    let m = 0;
    for (let c = 0; c < C; c++) m += x[r * C + c];
    m /= C;
    let v = 0;
    for (let c = 0; c < C; c++) v += (x[r * C + c] - m) ** 2;
    const rs = 1 / Math.sqrt(v / C + eps);
    mean[r] = m;
    rstd[r] = rs;
    let sg = 0, sgx = 0;
    for (let c = 0; c < C; c++) {
      const xh = (x[r * C + c] - m) * rs;
      y[r * C + c] = xh * (w ? w[c] : 1) + (b ? b[c] : 0);
      const g = gy[r * C + c] * (w ? w[c] : 1);
      sg += g;
      sgx += g * xh;
      gw[c] += gy[r * C + c] * xh;
      gb[c] += gy[r * C + c];
    }
    for (let c = 0; c < C; c++) {
      const xh = (x[r * C + c] - m) * rs, g = gy[r * C + c] * (w ? w[c] : 1);
      gx[r * C + c] = rs * (g - sg / C - xh * sgx / C);
    }
  }
  return { y, mean, rstd, gx, gw, gb };
}

export function rmsNormRef(x: F, w: F, rows: number, C: number, eps: number, gy: F) {
  const y = new Float64Array(x.length), rstd = new Float64Array(rows), gx = new Float64Array(x.length);
  const gw = new Float64Array(C);
  for (let r = 0; r < rows; r++) {
    let ss = 0;
    for (let c = 0; c < C; c++) ss += x[r * C + c] ** 2;
    const rs = 1 / Math.sqrt(ss / C + eps);
    rstd[r] = rs;
    let sgx = 0;
    for (let c = 0; c < C; c++) {
      const xh = x[r * C + c] * rs;
      y[r * C + c] = xh * w[c];
      sgx += gy[r * C + c] * w[c] * xh;
      gw[c] += gy[r * C + c] * xh;
    }
    for (let c = 0; c < C; c++) gx[r * C + c] = rs * (gy[r * C + c] * w[c] - x[r * C + c] * rs * sgx / C);
  }
  return { y, rstd, gx, gw };
}

/** HF's RoPE angle in fp32 (LlamaRotaryEmbedding: inv_freq = 1 / base^(arange(0, D, 2) / D), angle = t · inv_freq,
 *  each an fp32 operation; native/src/core/rope_angle.h). */
export function ropeAngle(pos: number, i: number, D: number, theta: number): number {
  const f = Math.fround;
  const inv = f(1 / f(Math.pow(f(theta), f(f(2 * i) / f(D)))));
  return f(f(pos) * inv);
}

/** HF rotate-half RoPE on [B, T, H, D]; sign −1 is the inverse rotation (the backward). */
export function ropeRef(x: F, B: number, T: number, H: number, D: number, pos0: number, theta: number, sign: number): F {
  const y = new Float64Array(x.length), D2 = D / 2;
  for (let b = 0; b < B; b++)
    for (let t = 0; t < T; t++)
      for (let h = 0; h < H; h++)
        for (let d = 0; d < D2; d++) {
          const ang = ropeAngle(pos0 + t, d, D, theta);
          const c = Math.fround(Math.cos(ang)), s = sign * Math.fround(Math.sin(ang));
          const i1 = ((b * T + t) * H + h) * D + d, i2 = i1 + D2;
          y[i1] = x[i1] * c - x[i2] * s;
          y[i2] = x[i2] * c + x[i1] * s;
        }
  return y;
}

const sig = (v: number) => 1 / (1 + Math.exp(-v));
export const quickGeluRef = (x: F, gy: F) => ({
  y: x.map((v) => v * sig(1.702 * v)),
  gx: x.map((v, i) => { const s = sig(1.702 * v); return gy[i] * (s + 1.702 * v * s * (1 - s)); }),
});
export const siluRef = (x: F, gy: F) => ({
  y: x.map((v) => v * sig(v)),
  gx: x.map((v, i) => { const s = sig(v); return gy[i] * s * (1 + v * (1 - s)); }),
});
export const swigluRef = (g: F, u: F, gy: F) => ({
  y: g.map((v, i) => v * sig(v) * u[i]),
  ggate: g.map((v, i) => { const s = sig(v); return gy[i] * u[i] * s * (1 + v * (1 - s)); }),
  gup: g.map((v, i) => gy[i] * v * sig(v)),
});

export function softmaxRef(x: F, rows: number, C: number, gy: F) {
  const y = new Float64Array(x.length), gx = new Float64Array(x.length);
  for (let r = 0; r < rows; r++) {
    let m = -Infinity;
    for (let c = 0; c < C; c++) m = Math.max(m, x[r * C + c]);
    let s = 0;
    for (let c = 0; c < C; c++) s += Math.exp(x[r * C + c] - m);
    let dot = 0;
    for (let c = 0; c < C; c++) {
      y[r * C + c] = Math.exp(x[r * C + c] - m) / s;
      dot += gy[r * C + c] * y[r * C + c];
    }
    for (let c = 0; c < C; c++) gx[r * C + c] = y[r * C + c] * (gy[r * C + c] - dot);
  }
  return { y, gx };
}

// ---- the dropout masks as the CPU backend draws them: one SplitMix64 stream (core/rng_hash.h) keyed by the seed,
// compared as 32 bits against floor(p·2^32) (dropout, attention) or read as a 24-bit float against p (LoRA) ----
const MASK64 = (1n << 64n) - 1n;
const GOLDEN = 0x9e3779b97f4a7c15n;
function mix64(z: bigint): bigint {
  z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & MASK64;
  z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & MASK64;
  return z ^ (z >> 31n);
}
function threshold32(p: number): number {
  const t = Math.fround(p) * 4294967296;
  return t <= 0 ? 0 : t >= 4294967295 ? 4294967295 : Math.floor(t);
}
/** dropoutForward/Backward (core/rng_hash.h): key mix64(seed); element i kept when the top 32 bits of
 *  mix64(key + (i+1)·γ) are >= floor(p·2^32). */
export function dropoutMask(p: number, seed: number): (index: number) => boolean {
  const key = mix64(BigInt(seed) & MASK64), thr = threshold32(p);
  return (i) => Number(mix64((key + (BigInt(i) + 1n) * GOLDEN) & MASK64) >> 32n) >= thr;
}
/** attention (core/dropout_hash.h, a view of rng_hash.h's stream): element ((b·H+h)·Tq+i)·Tk+j kept as above. */
export function attentionDropoutMask(p: number, seed: number): (index: number) => boolean {
  return dropoutMask(p, seed);
}
/** LoRA input dropout (core/hash_u01.h, the same stream read as a float): element i of x kept when
 *  (mix64(key + (i+1)·γ) >> 40) · 2^-24 >= p. */
export function loraDropoutMask(p: number, seed: number): (index: number) => boolean {
  const key = mix64(BigInt(seed) & MASK64), pf = Math.fround(p);
  return (i) => Number(mix64((key + (BigInt(i) + 1n) * GOLDEN) & MASK64) >> 40n) / 16777216 >= pf;
}
export function dropoutRef(x: F, p: number, seed: number, mask = dropoutMask): F {
  const keep = mask(p, seed), sc = 1 / (1 - Math.fround(p));
  return x.map((v, i) => (keep(i) ? v * sc : 0));
}

export interface AttnDims { B: number; Tq: number; Tk: number; H: number; D: number }
/** Attention with key mask, causal alignment to the last key, dropout on the probabilities; forward and backward. */
export function attentionRef(q: F, k: F, v: F, mask: F | null, d: AttnDims, causal: boolean, scale: number, p: number,
  seed: number, gout: F) {
  const { B, Tq, Tk, H, D } = d;
  const out = new Float64Array(q.length), lse = new Float64Array(B * H * Tq);
  const gq = new Float64Array(q.length), gk = new Float64Array(k.length), gv = new Float64Array(v.length);
  const keep = p > 0 ? attentionDropoutMask(p, seed) : null, zs = p > 0 ? 1 / (1 - Math.fround(p)) : 1;
  const P = new Float64Array(Tk), Z = new Float64Array(Tk), dP = new Float64Array(Tk);
  const qi = (b: number, t: number, h: number) => ((b * Tq + t) * H + h) * D;
  const ki = (b: number, t: number, h: number) => ((b * Tk + t) * H + h) * D;
  for (let b = 0; b < B; b++)
    for (let h = 0; h < H; h++)
      for (let i = 0; i < Tq; i++) {
        let m = -Infinity;
        const qo = qi(b, i, h);
        for (let j = 0; j < Tk; j++) {
          const vis = (!causal || j <= i + Tk - Tq) && (!mask || mask[b * Tk + j] !== 0);
          let s = -Infinity;
          if (vis) {
            s = 0;
            const ko = ki(b, j, h);
            for (let e = 0; e < D; e++) s += q[qo + e] * k[ko + e];
            s *= scale;
          }
          P[j] = s;
          if (s > m) m = s;
          Z[j] = keep ? (keep(((b * H + h) * Tq + i) * Tk + j) ? zs : 0) : 1;
        }
        let l = 0;
        for (let j = 0; j < Tk; j++) { P[j] = m === -Infinity ? 0 : Math.exp(P[j] - m); l += P[j]; }
        lse[(b * H + h) * Tq + i] = l > 0 ? m + Math.log(l) : -Infinity;
        for (let j = 0; j < Tk; j++) P[j] = l > 0 ? P[j] / l : 0;
        let delta = 0;
        for (let j = 0; j < Tk; j++) {
          const ko = ki(b, j, h);
          let dp = 0;
          for (let e = 0; e < D; e++) {
            out[qo + e] += P[j] * Z[j] * v[ko + e];
            dp += gout[qo + e] * v[ko + e];
          }
          dP[j] = dp * Z[j];
          delta += P[j] * dP[j];
        }
        for (let j = 0; j < Tk; j++) {
          if (P[j] === 0) continue;
          const ds = P[j] * (dP[j] - delta), ko = ki(b, j, h);
          for (let e = 0; e < D; e++) {
            gq[qo + e] += scale * ds * k[ko + e];
            gk[ko + e] += scale * ds * q[qo + e];
            gv[ko + e] += P[j] * Z[j] * gout[qo + e];
          }
        }
      }
  return { out, lse, gq, gk, gv };
}

/** LoRA linear: y = x Wᵀ + s (drop(x) Aᵀ) Bᵀ and its gradients (dx, dA, dB). x [M, K], W [N, K], A [r, K], B [N, r]. */
export function loraRef(x: F, w: F, a: F, bm: F, M: number, K: number, N: number, r: number, s: number, p: number,
  seed: number, gy: F) {
  const xd = p > 0 ? dropoutRef(x, p, seed, loraDropoutMask) : x;
  const xa = matmulRef(xd, a, 1, M, K, r, false, true, true);
  const y = matmulRef(x, w, 1, M, K, N, false, true, true);
  const low = matmulRef(xa, bm, 1, M, r, N, false, true, true);
  for (let i = 0; i < y.length; i++) y[i] += s * low[i];
  const gyB = matmulRef(gy, bm, 1, M, N, r, false, false, true);
  const gb = matmulRef(gy, xa, 1, N, M, r, true, false, true).map((v) => s * v);
  const ga = matmulRef(gyB, xd, 1, r, M, K, true, false, true).map((v) => s * v);
  let gxl: F = matmulRef(gyB, a, 1, M, r, K, false, false, true).map((v) => s * v);
  if (p > 0) gxl = dropoutRef(gxl, p, seed, loraDropoutMask);
  const gx = matmulRef(gy, w, 1, M, N, K, false, false, true);
  for (let i = 0; i < gx.length; i++) gx[i] += gxl[i];
  return { y, xa, gx, ga, gb };
}

export function crossEntropyRef(logits: F, labels: F, N: number, V: number, ignore: number) {
  const dl = new Float64Array(logits.length);
  let count = 0, total = 0;
  for (let r = 0; r < N; r++) if (labels[r] !== ignore) count++;
  for (let r = 0; r < N; r++) {
    const lab = labels[r];
    if (lab === ignore) continue;
    let m = -Infinity;
    for (let c = 0; c < V; c++) m = Math.max(m, logits[r * V + c]);
    let s = 0;
    for (let c = 0; c < V; c++) s += Math.exp(logits[r * V + c] - m);
    const lse = m + Math.log(s);
    total += lse - logits[r * V + lab];
    for (let c = 0; c < V; c++) dl[r * V + c] = (Math.exp(logits[r * V + c] - lse) - (c === lab ? 1 : 0)) / count;
  }
  return { loss: Float64Array.of(count ? total / count : 0), dlogits: dl };
}

/** PyTorch's AdamW step on flat arrays (updates in place, returns them). */
export function adamwRef(p: F, g: F, m: F, v: F, wd: number, lr: number, b1: number, b2: number, eps: number,
  step: number) {
  const bc1 = 1 - b1 ** step, bc2 = 1 - b2 ** step;
  for (let i = 0; i < p.length; i++) {
    m[i] = b1 * m[i] + (1 - b1) * g[i];
    v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i];
    p[i] = p[i] * (1 - lr * wd) - (lr / bc1) * m[i] / (Math.sqrt(v[i]) / Math.sqrt(bc2) + eps);
  }
  return { p, m, v };
}
