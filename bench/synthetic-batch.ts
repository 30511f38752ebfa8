// A reproducible training batch for the CPU benchmarks: B samples of L+1 ids (BOS, one image's 17 media ids at
// positions 2–18, pseudo-random text ids from an LCG), loss on positions 40 and later, pixels uniform in [-1, 1).
import { tensor } from '../lib/tensor/index.ts';
import type { OwlBatch } from '../lib/model/index.ts';

export function syntheticBatch(o: { batch: number; length: number; resolution: number; media?: number; vocab?: number }): OwlBatch {
  const B = o.batch, L = o.length, T = L + 1, med = o.media ?? 17, R = o.resolution;
  const ids = new Int32Array(B * T);
  let s = 1;
  for (let i = 0; i < ids.length; i++) { s = (s * 1103515245 + 12345) >>> 0; ids[i] = 3 + (s % ((o.vocab ?? 32000) - 3)); }
  for (let b = 0; b < B; b++) { ids[b * T] = 1; for (let j = 2; j < 2 + med; j++) ids[b * T + j] = -1; }
  const np = new Float32Array(B * L).fill(1), nm = new Float32Array(B * L), pm = new Float32Array(B * L);
  for (let b = 0; b < B; b++) for (let i = 0; i < L; i++) { nm[b * L + i] = ids[b * T + i + 1] >= 0 ? 1 : 0; pm[b * L + i] = i >= 40 ? 1 : 0; }
  const px = new Float32Array(B * 3 * R * R);
  for (let i = 0; i < px.length; i++) { s = (s * 1103515245 + 12345) >>> 0; px[i] = (s / 4294967296) * 2 - 1; }
  return { inputIds: ids, batchSize: B, seqLen: T, numImages: new Int32Array(B).fill(1), nonPaddingMask: np,
    nonMediaMask: nm, promptMask: pm, pixelValues: tensor(px, [B, 3, R, R]) };
}
