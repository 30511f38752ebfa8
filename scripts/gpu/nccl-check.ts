// The NCCL path on the GPU machine (one GPU, world size 1): a process group whose rendezvous store this process hosts,
// whose CUDA collectives go through the CUDA addon's NCCL communicator. Checks bucketed all-reduce and broadcast of
// CUDA tensors (values), then the owl-tiny stage-2 step: forward, backward, gradients averaged through NCCL (world
// size 1: unchanged, bit for bit), the same step with the all-reduce overlapped with the backward (buckets started
// from autograd's gradient-ready hook on the communication stream; lib/dist/grad-reducer.ts) against the all-reduce
// after it, and times one 100 MB all-reduce.
// Usage: node nccl-check.mjs <owl-tiny dir> [device]     (bundle it like fixture.ts; not part of the CPU test suite)
import { join } from 'node:path';
import { GradientReducer } from '../../lib/dist/grad-reducer.ts';
import { GlooProcessGroup } from '../../lib/dist/process-group.ts';
import { loadBatch, loadModel } from '../../lib/model/index.ts';
import { cpuDist, cudaNccl } from '../../lib/native.ts';
import { backward, scope, tensor, zeros, type BackwardOptions, type Tensor } from '../../lib/tensor/index.ts';
import { modelSizes } from '../../lib/train/config.ts';
import { buildModel } from '../../lib/train/owl-components.ts';
import { tinyConfig, trainTinySteps } from '../../test/helpers/owl-steps.ts';

const FX = process.argv[2];
const device = process.argv[3] ?? 'cuda';
const via = device.startsWith('cuda') ? 'NCCL' : 'gloo';
let failed = 0;
const report = (ok: boolean, what: string) => { if (!ok) failed++; console.log(`${ok ? 'PASS' : 'FAIL'} ${what}`); };

// (With device cpu the same checks run through gloo: a dry run of this script on a machine without a GPU.)
if (device.startsWith('cuda') && !cudaNccl()) {
  console.log('FAIL nccl: the CUDA addon was built without NCCL');
  process.exit(1);
}
const port = cpuDist().storeServerStart('127.0.0.1', 0);
const g = GlooProcessGroup.connect({ rank: 0, worldSize: 1, localRank: 0, localWorldSize: 1, masterAddr: '127.0.0.1', masterPort: port },
  { env: { OWLET_STORE_HOSTED: '1' }, bucketBytes: 64, timeoutMs: 60_000, rendezvousTimeoutMs: 60_000 });
try {
  scope(() => {
    // 3 + 5 floats share a 64-byte bucket, 101 floats go alone.
    const xs = [tensor(new Float32Array([1, 2, 3]), [3], { device }), tensor(new Float32Array(5).fill(0.5), [5], { device }),
      tensor(Float32Array.from({ length: 101 }, (_, i) => i), [101], { device })];
    const want = xs.map((t) => Array.from(t.toFloat32()));
    g.allReduceMean(xs);
    report(xs.every((t, i) => t.toFloat32().every((v, j) => v === want[i][j])), `${via} all-reduce (mean over 1 rank) leaves the values, 2 buckets`);
    const b = [tensor(new Int32Array([7, -7]), [2], { dtype: 'i32', device }), tensor(new Float32Array([9]), [1], { device })];
    g.broadcast(b, 0);
    report(b[0].data<'i32'>()[1] === -7 && b[1].toFloat32()[0] === 9, `${via} broadcast from rank 0 (i32 and f32, one bucket)`);
  });

  const m = loadModel(FX, { adapterDir: FX, device });
  m.setTrainable(['queries', 'abstractor', 'lora']);
  scope(() => {
    const { loss } = m.forward(loadBatch(join(FX, 'batch.safetensors'), device));
    backward(loss);
    const grads = [...m.trainable().values()].flatMap((p) => (p.grad ? [p.grad] : []));
    const before = grads.map((t) => t.toFloat32());
    const t0 = performance.now();
    g.allReduceMean(grads);
    const ms = performance.now() - t0;
    report(grads.every((t, i) => t.toFloat32().every((v, j) => v === before[i][j])),
      `owl-tiny stage-2 step: ${grads.length} gradients averaged through ${via} unchanged (loss ${loss.item().toFixed(4)}, ${ms.toFixed(1)} ms)`);
  });

  // Overlapped: two micro-batches (accumulation 2), the second back-propagated with the reducer's hooks. Buckets of
  // 64 kB, so that several start during the backward, each packed from several gradients (later rounds also with
  // one bucket per gradient, reduced in place).
  const params = [...m.trainable().values()];
  const clear = () => { for (const p of params) if (p.grad) { p.grad.dispose(); p.grad = null; } };
  const batch = loadBatch(join(FX, 'batch.safetensors'), device);
  const step = (hooks?: BackwardOptions) => {
    for (let micro = 0; micro < 2; micro++) scope(() => backward(m.forward(batch).loss, undefined, micro === 1 ? hooks : undefined));
  };
  const host = (xs: (Tensor | null)[]) => xs.map((t) => (t ? t.toFloat32() : null));
  const same = (a: (Float32Array | null)[], b: (Float32Array | null)[], k = 1) =>
    a.length === b.length && a.every((x, i) => (x === null ? b[i] === null : b[i] !== null && x.every((v, j) => v * k === b[i]![j])));
  clear();
  step();
  let t0 = performance.now();
  g.allReduceMean(params.flatMap((p) => (p.grad ? [p.grad] : [])));
  const after = host(params.map((p) => p.grad));
  const afterMs = performance.now() - t0;
  clear();
  const reducer = new GradientReducer(params, g, 64 * 1024);
  const sizes = reducer.buckets.map((b) => b.length);
  step(reducer.backwardOptions());
  const early = reducer.startedEarly;
  t0 = performance.now();
  const had = reducer.finish();
  // Compute-stream work queued right after finish() must see the reduced values (it waits for the communication
  // stream): a doubling queued now would be overwritten by a late unpack if it did not.
  const grads = params.flatMap((p) => (p.grad ? [p.grad] : []));
  grads[0].backend.scaleInplace(grads.map((t) => t.handle), 2);
  const overlapped = host(params.map((p) => p.grad));
  const finishMs = performance.now() - t0;
  const inFlight = device.startsWith('cuda') ? cudaNccl()!.ncclInFlight() : 0;
  report(same(after, overlapped, 2) && inFlight === 0,
    `overlapped all-reduce through ${via}: ${reducer.buckets.length} buckets (sizes ${sizes.join(',')}), ${early} started during the backward, ` +
    `gradients equal the all-reduce after the backward (×2 queued after finish seen by the compute stream; ${inFlight} in flight)`);
  report(had.every((h, i) => h === (after[i] !== null)), `overlapped: the parameters without a gradient are the same (${had.filter((h) => !h).length})`);
  console.log(`INFO owl-tiny stage-2: all-reduce after the backward ${afterMs.toFixed(2)} ms; finish() of the overlapped one ${finishMs.toFixed(2)} ms (world size 1)`);
  // More rounds: buffers released at each wait are reused by the next round's allocations.
  const single = new GradientReducer(params, g, 4);
  let stable = true;
  for (let round = 0; round < 4; round++) {
    const r = round % 2 ? single : reducer;
    clear();
    step(r.backwardOptions());
    r.finish();
    stable &&= same(after, host(params.map((p) => p.grad)));
  }
  report(stable, `overlapped: 4 more rounds, alternately with ${single.buckets.length} one-gradient buckets reduced in place, give the same gradients`);
  clear();
  batch.pixelValues?.dispose();
  for (const t of m.params.values()) t.dispose();

  // The trainer itself with this process group (stage 2, 4 steps × 2 micro-batches): what `owlet train` does as rank 0
  // of 1 under a launcher — its statistics reduced through the group — against the same steps without one.
  {
    const c = tinyConfig(FX, 2, device, 'f32');
    const alone = await trainTinySteps(buildModel(c, modelSizes(c), { env: {} }), c, FX, 4);
    const grouped = await trainTinySteps(buildModel(c, modelSizes(c), { env: {} }), c, FX, 4, g);
    const sameW = [...alone.weights].every(([k, w]) => { const o = grouped.weights.get(k); return !!o && w.every((v, j) => v === o[j]); });
    report(sameW && alone.losses.every((l, i) => l === grouped.losses[i]),
      `trainer with the ${via} group (world size 1), owl-tiny stage 2, 4 steps: losses ${grouped.losses.map((l) => l.toFixed(4)).join(' ')} ` +
      `and weights equal to the run without a group`);
  }

  scope(() => {
    const big = zeros([25_000_000], { device });
    g.allReduceSum([big]);
    const t0 = performance.now();
    g.allReduceSum([big]);
    console.log(`INFO one 100 MB all-reduce through ${via} (world size 1): ${(performance.now() - t0).toFixed(2)} ms`);
  });
} catch (e) {
  report(false, `${via}: ${(e as Error).message}`);
} finally {
  g.close();
  cpuDist().storeServerStop(port);
}
process.exitCode = failed ? 1 : 0;
