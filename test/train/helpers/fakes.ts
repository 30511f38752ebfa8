// Tiny stand-ins for the pieces the trainer plugs into, built from the existing tensor runtime: a safetensors file IO
// (f32/i32), a host AdamW (PyTorch's formula), host gradient reductions, a linear-regression "model" whose loss uses
// only ops with backward rules, and a seeded, resumable data stream.
import { readFileSync, writeFileSync } from 'node:fs';
import {
  Tensor, linear, matmul, mul, noGrad, reshape, scale, sub, tensor, full, record,
} from '../../../lib/tensor/index.ts';
import { cpu } from '../../../lib/native.ts';
import { Rng } from '../../../lib/train/rng.ts';
import type {
  Batch, DataStream, MicroBatchContext, ForwardOutput, GradOps, Json, Optimizer, OptimizerState, DecayGroup, TensorFileIO,
  TrainableModel,
} from '../../../lib/train/types.ts';

// ---- safetensors (enough for checkpoints of f32/i32 tensors) ----
const ST_DTYPE: Record<string, string> = { f32: 'F32', i32: 'I32' };
export const fakeIO: TensorFileIO = {
  save(path, tensors, metadata) {
    const header: Record<string, unknown> = {};
    if (metadata) header.__metadata__ = metadata;
    const blobs: Uint8Array[] = [];
    let off = 0;
    for (const [name, t] of [...tensors].sort(([a], [b]) => (a < b ? -1 : 1))) {
      const bytes = new Uint8Array(t.handle.read());
      header[name] = { dtype: ST_DTYPE[t.dtype], shape: [...t.shape], data_offsets: [off, off + bytes.length] };
      blobs.push(bytes);
      off += bytes.length;
    }
    let json = JSON.stringify(header);
    json += ' '.repeat((8 - (json.length % 8)) % 8);
    const head = Buffer.alloc(8);
    head.writeBigUInt64LE(BigInt(json.length));
    writeFileSync(path, Buffer.concat([head, Buffer.from(json), ...blobs]));
  },
  load(path) {
    const buf = readFileSync(path);
    const n = Number(buf.readBigUInt64LE(0));
    const header = JSON.parse(buf.subarray(8, 8 + n).toString()) as Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
    const out = new Map<string, Tensor>();
    for (const [name, e] of Object.entries(header)) {
      if (name === '__metadata__') continue;
      const raw = buf.subarray(8 + n + e.data_offsets[0], 8 + n + e.data_offsets[1]);
      const copy = new Uint8Array(raw); // aligned copy
      const data = e.dtype === 'F32' ? new Float32Array(copy.buffer) : new Int32Array(copy.buffer);
      out.set(name, tensor(data, e.shape));
    }
    return out;
  },
};

// ---- host helpers ----
function writeInto(t: Tensor, values: Float32Array): void {
  const be = cpu();
  const src = be.fromBuffer('f32', [...t.shape], values);
  be.copyInto(t.handle, src);
  src.dispose();
}

export const hostGradOps: GradOps = {
  sumSquares(xs) {
    let s = 0;
    for (const x of xs) for (const v of x.data<'f32'>()) s += v * v;
    return s;
  },
  scaleInplace(xs, k) {
    for (const x of xs) writeInto(x, x.data<'f32'>().map((v) => v * k));
  },
};

/** torch.optim.AdamW's update, on the host, with decoupled decay per group. */
export class HostAdamW implements Optimizer {
  private t = 0;
  private readonly m = new Map<string, Float32Array>();
  private readonly v = new Map<string, Float32Array>();
  constructor(private readonly groups: DecayGroup[], private readonly betas: [number, number] = [0.9, 0.999],
    private readonly eps = 1e-8) {}

  step(lr: number, gradScale = 1): void {
    this.t++;
    const [b1, b2] = this.betas;
    for (const g of this.groups) {
      for (const [name, p] of g.params) {
        if (!p.grad) continue;
        const w = p.data<'f32'>(), gr = p.grad.data<'f32'>().map((x) => x * gradScale);
        const m = this.m.get(name) ?? new Float32Array(w.length), v = this.v.get(name) ?? new Float32Array(w.length);
        const bc1 = 1 - b1 ** this.t, bc2 = 1 - b2 ** this.t;
        for (let i = 0; i < w.length; i++) {
          w[i] *= 1 - lr * g.weightDecay;
          m[i] = b1 * m[i] + (1 - b1) * gr[i];
          v[i] = b2 * v[i] + (1 - b2) * gr[i] * gr[i];
          w[i] -= (lr / bc1) * m[i] / (Math.sqrt(v[i] / bc2) + this.eps);
        }
        this.m.set(name, m); this.v.set(name, v);
        writeInto(p, w);
      }
    }
  }
  exportState(): OptimizerState {
    const tensors = new Map<string, Tensor>();
    for (const [k, a] of this.m) tensors.set(`m.${k}`, tensor(a.slice()));
    for (const [k, a] of this.v) tensors.set(`v.${k}`, tensor(a.slice()));
    return { meta: { step: this.t }, tensors };
  }
  importState(s: OptimizerState): void {
    this.t = (s.meta as { step: number }).step;
    this.m.clear(); this.v.clear();
    for (const [k, t] of s.tensors) (k.startsWith('m.') ? this.m : this.v).set(k.slice(2), t.data<'f32'>().slice());
  }
}

// ---- data ----
export interface RegressionBatch extends Batch { x: Tensor; y: Tensor }
export const IN = 5, OUT = 3;

/** n samples of y = x·Aᵀ + c + noise; shuffled per epoch by its own RNG; `nanSamples` get NaN inputs. */
export class RegressionData implements DataStream<RegressionBatch> {
  private readonly xs: Float32Array[] = [];
  private readonly ys: Float32Array[] = [];
  private order: number[] = [];
  private epoch = 0;
  private index = 0;
  private rng: Rng;
  readonly microBatchesPerEpoch: number;

  constructor(readonly n: number, readonly micro: number, seed: number, readonly nanSamples = new Set<number>()) {
    const r = new Rng(1234);
    const A = Array.from({ length: OUT * IN }, () => r.next() * 2 - 1);
    for (let i = 0; i < n; i++) {
      const x = Float32Array.from({ length: IN }, () => r.next() * 2 - 1);
      if (nanSamples.has(i)) x[0] = NaN;
      const y = Float32Array.from({ length: OUT }, (_, o) => x.reduce((s, xv, k) => s + xv * A[o * IN + k], 0.3 * o) + 0.01 * (r.next() - 0.5));
      this.xs.push(x); this.ys.push(y);
    }
    this.rng = new Rng(seed);
    this.microBatchesPerEpoch = Math.floor(n / micro);
    this.shuffle();
  }
  private shuffle(): void {
    this.order = Array.from({ length: this.n }, (_, i) => i);
    for (let i = this.n - 1; i > 0; i--) {
      const j = this.rng.nextU32() % (i + 1);
      [this.order[i], this.order[j]] = [this.order[j], this.order[i]];
    }
  }
  async next(): Promise<RegressionBatch> {
    if (this.index + this.micro > this.n) { this.epoch++; this.index = 0; this.shuffle(); }
    const idx = this.order.slice(this.index, this.index + this.micro);
    this.index += this.micro;
    const x = new Float32Array(this.micro * IN), y = new Float32Array(this.micro * OUT);
    idx.forEach((s, b) => { x.set(this.xs[s], b * IN); y.set(this.ys[s], b * OUT); });
    const xt = tensor(x, [this.micro, IN]), yt = tensor(y, [this.micro, OUT]);
    return { sampleIds: idx.map((s) => `s${s}`), tokens: this.micro * IN, images: 0, x: xt, y: yt,
      dispose() { xt.dispose(); yt.dispose(); } };
  }
  position(): Json { return { epoch: this.epoch, index: this.index, order: this.order, rng: this.rng.state() }; }
  restore(p: Json): void {
    const q = p as { epoch: number; index: number; order: number[]; rng: number[] };
    this.epoch = q.epoch; this.index = q.index; this.order = [...q.order]; this.rng.restore(q.rng);
  }
}

// ---- model ----
/**
 * pred = ((x ⊙ keep-mask) Pᵀ) Wᵀ + b with a frozen P (`vision_model.proj.weight`) and trainable W, b
 * (`abstractor.fc.*`); loss = mean squared error. The keep-mask is dropout drawn from the step's seed, so resuming
 * must restore the trainer's RNG exactly. `poisonGrad` makes the gradient of W infinite while the loss stays finite.
 */
export class RegressionModel implements TrainableModel<RegressionBatch> {
  readonly params = new Map<string, Tensor>();
  poisonGrad = false;
  /** Return the accuracy count deferred, noting at each read whether W already had a gradient (backward queued). */
  deferCount = false;
  readsAfterBackward: boolean[] = [];
  constructor(seed: number) {
    const r = new Rng(seed);
    const init = (n: number, s: number) => Float32Array.from({ length: n }, () => (r.next() * 2 - 1) * s);
    const eye = new Float32Array(IN * IN);
    for (let i = 0; i < IN; i++) for (let j = 0; j < IN; j++) eye[i * IN + j] = (i === j ? 1 : 0) + 0.05 * (r.next() - 0.5);
    this.params.set('vision_model.proj.weight', tensor(eye, [IN, IN], { name: 'vision_model.proj.weight' }));
    this.params.set('abstractor.fc.weight', tensor(init(OUT * IN, 0.3), [OUT, IN], { name: 'abstractor.fc.weight' }));
    this.params.set('abstractor.fc.bias', tensor(init(OUT, 0.1), [OUT], { name: 'abstractor.fc.bias' }));
  }
  parameters(): Map<string, Tensor> { return this.params; }
  forward(batch: RegressionBatch, ctx: MicroBatchContext): ForwardOutput {
    const B = batch.x.shape[0];
    const r = new Rng(ctx.seed);
    const keepP = 0.9;
    const mask = tensor(Float32Array.from({ length: B * IN }, () => (r.next() < keepP ? 1 / keepP : 0)), [B, IN]);
    const h = linear(mul(batch.x, mask), this.params.get('vision_model.proj.weight')!);
    const pred = linear(h, this.params.get('abstractor.fc.weight')!, this.params.get('abstractor.fc.bias')!);
    const d = sub(pred, batch.y);
    const d2 = reshape(d, [1, B * OUT]);
    let loss = reshape(scale(matmul(d2, d2, false, true), 1 / (B * OUT)), [1]);
    if (this.poisonGrad) {
      const w = this.params.get('abstractor.fc.weight')!;
      const out = noGrad(() => scale(loss, 1));
      record('poison', [loss, w], [out], [], ([g]) => [g!.share(), full(w.shape, Infinity)]);
      loss = out;
    }
    const err = noGrad(() => d.data<'f32'>());
    const correct = err.filter((e) => Math.abs(e) < 0.25).length;
    if (!this.deferCount) return { loss, counted: B * OUT, correct };
    const w = this.params.get('abstractor.fc.weight')!;
    return { loss, counted: B * OUT, correct: { read: () => { this.readsAfterBackward.push(w.grad !== null); return correct; }, dispose: () => {} } };
  }
  /** Copies of every parameter's values (bit-exact comparisons). */
  snapshot(): Record<string, number[]> {
    return Object.fromEntries([...this.params].map(([k, t]) => [k, Array.from(t.data<'f32'>())]));
  }
  dispose(): void { for (const t of this.params.values()) t.dispose(); }
}
