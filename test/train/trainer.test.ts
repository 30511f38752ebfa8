import test from 'ava';
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Tensor, liveTensors, backward, scope, full, keep, tensor, cast, WorkingCopies } from '../../lib/tensor/index.ts';
import { resolveResume } from '../../lib/train/checkpoint.ts';
import { CheckpointError, TrainingError } from '../../lib/train/errors.ts';
import { readRecords, type StepStats } from '../../lib/train/metrics.ts';
import { Rng } from '../../lib/train/rng.ts';
import type { Optimizer, OptimizerState } from '../../lib/train/types.ts';
import { nativeGradOps } from '../../lib/train/grad-ops.ts';
import { OwlOptimizer } from '../../lib/train/owl-components.ts';
import { decayGroups } from '../../lib/train/param-groups.ts';
import { RegressionData, RegressionModel } from './helpers/fakes.ts';
import { core, setup } from './helpers/run-fixture.ts';

const tmp = () => mkdtempSync(join(tmpdir(), 'owlet-trainer-'));

/** Records the gradients the optimizer applies (each .grad times the clipping scale it is handed) and the lr, and
 *  does not update. */
class CapturingOptimizer implements Optimizer {
  calls: { lr: number; gradScale: number; grads: Record<string, number[]> }[] = [];
  constructor(private readonly params: Map<string, Tensor>) {}
  step(lr: number, gradScale = 1) {
    const applied = (p: Tensor) => Array.from(Math.fround(gradScale) === 1 ? p.grad!.data<'f32'>() : p.grad!.data<'f32'>().map((x) => x * gradScale));
    this.calls.push({ lr, gradScale, grads: Object.fromEntries([...this.params].filter(([, p]) => p.grad).map(([k, p]) => [k, applied(p)])) });
  }
  exportState(): OptimizerState { return { meta: null, tensors: new Map() }; }
  importState() {}
}

test.serial('a step averages the micro-batch gradients (mean of means), clips by global norm, uses lr(t)', async (t) => {
  // Reference: the same two micro-batches and dropout seeds, back-propagated one by one.
  const refModel = new RegressionModel(7);
  const refData = new RegressionData(37, 3, 5);
  const rng = new Rng(11);
  const names = ['abstractor.fc.weight', 'abstractor.fc.bias'];
  for (const n of names) refModel.params.get(n)!.requiresGrad = true;
  const sum: Record<string, Float64Array> = {};
  let lossSum = 0;
  for (let micro = 0; micro < 2; micro++) {
    const b = await refData.next();
    scope(() => {
      const out = refModel.forward(b, { step: 1, micro, seed: rng.nextSeed(), training: true });
      lossSum += out.loss.item();
      backward(out.loss);
    });
    for (const n of names) {
      const g = refModel.params.get(n)!;
      const v = g.grad!.data<'f32'>();
      sum[n] ??= new Float64Array(v.length);
      v.forEach((x, i) => { sum[n][i] += x / 2; });
      g.grad!.dispose(); g.grad = null;
    }
    b.dispose!();
  }
  const norm = Math.sqrt(names.reduce((s, n) => s + sum[n].reduce((a, x) => a + x * x, 0), 0));

  refModel.dispose();
  let cap3!: CapturingOptimizer;
  const s3 = setup({ makeOptimizer: (tr) => (cap3 = new CapturingOptimizer(tr)) });
  const stats = await s3.trainer.trainStep();
  t.true(Math.abs(stats.loss - lossSum / 2) < 1e-6, `loss ${stats.loss} vs ${lossSum / 2}`);
  t.true(Math.abs(stats.gradNorm - norm) < 1e-5 * norm, `norm ${stats.gradNorm} vs ${norm}`);
  t.true(norm > 0.5, 'the clip must bite in this test');
  await s3.trainer.trainStep();
  t.is(cap3.calls.length, 2);
  t.is(cap3.calls[0].lr, 0, 'lr(0) of a warm-up is 0 (HF)');
  t.is(cap3.calls[1].lr, 0.025);
  const clipped = Math.sqrt(names.reduce((s, n) => s + cap3.calls[0].grads[n].reduce((a, x) => a + x * x, 0), 0));
  t.true(Math.abs(clipped - 0.5 * norm / (norm + 1e-6)) < 1e-5, `clipped norm ${clipped}`);
  t.true(Math.abs(cap3.calls[0].gradScale - 0.5 / (stats.gradNorm + 1e-6)) < 1e-12, 'the optimizer is handed the clipping coefficient');
  for (const n of names) {
    cap3.calls[0].grads[n].forEach((g, i) => t.true(Math.abs(g - sum[n][i] * 0.5 / (norm + 1e-6)) < 1e-6));
  }
  t.is(s3.model.params.get('vision_model.proj.weight')!.grad, null, 'frozen parameters get no gradient');
  s3.trainer.dispose(); s3.model.dispose();
});

test.serial('training reduces the loss, leaves frozen weights alone, and leaks no tensors', async (t) => {
  const { model, trainer } = setup({ totalSteps: 30 });
  const frozen = Array.from(model.params.get('vision_model.proj.weight')!.data<'f32'>());
  await trainer.trainStep();
  const live = liveTensors();
  for (let i = 0; i < 29; i++) await trainer.trainStep();
  t.is(liveTensors(), live, 'a step leaves the live-tensor count unchanged');
  const h = trainer.history;
  const first = (h[0].loss + h[1].loss + h[2].loss) / 3, last = (h[27].loss + h[28].loss + h[29].loss) / 3;
  t.true(last < first * 0.5, `loss ${first} → ${last}`);
  t.deepEqual(Array.from(model.params.get('vision_model.proj.weight')!.data<'f32'>()), frozen);
  trainer.dispose(); model.dispose();
});

test.serial('same seed, same run: two fresh runs are bit-identical', async (t) => {
  const a = setup(), b = setup();
  for (let i = 0; i < 5; i++) { await a.trainer.trainStep(); await b.trainer.trainStep(); }
  t.deepEqual(core(a.trainer.history), core(b.trainer.history));
  t.deepEqual(a.model.snapshot(), b.model.snapshot());
  for (const s of [a, b]) { s.trainer.dispose(); s.model.dispose(); }
});

test.serial('resume is bit-for-bit: N+K straight equals N, save, fresh state, resume, K', async (t) => {
  const N = 4, TOTAL = 9;
  const dirA = tmp(), dirB = tmp();
  const straight = setup({ outDir: dirA, totalSteps: TOTAL });
  const ra = await straight.trainer.run();
  t.is(ra.steps, TOTAL);
  t.deepEqual(readdirSync(join(dirA, 'checkpoints')).sort(), ['ckpt-8', 'ckpt-9', 'latest'], 'keep-last 2 after saves at 4, 8, 9');

  const first = setup({ outDir: dirB, totalSteps: TOTAL });
  for (let i = 0; i < N; i++) await first.trainer.trainStep();
  await first.trainer.save();
  first.trainer.dispose(); first.model.dispose();

  // Everything fresh: model at its initial weights, data at its start, a new optimizer and RNG.
  const resumed = setup({ outDir: dirB, totalSteps: TOTAL });
  const ckpt = await resolveResume(join(dirB, 'checkpoints'), 'auto');
  t.is(ckpt, join(dirB, 'checkpoints', `ckpt-${N}`));
  await resumed.trainer.resumeFrom(ckpt!);
  t.is(resumed.trainer.step, N);
  await resumed.trainer.run();
  t.deepEqual(core(resumed.trainer.history), core(straight.trainer.history), 'same losses, grad norms and lrs, step by step');
  t.deepEqual(resumed.model.snapshot(), straight.model.snapshot(), 'same final weights, bit for bit');
  // metrics.jsonl of the resumed run holds each logging step once
  // (the first session logged nothing — trainStep, not run —: its records are written on resume from the restored
  // step history, the same as the straight run's)
  t.deepEqual(recordCore(dirB), recordCore(dirA), 'the records of the straight run, each once');
  for (const s of [straight, resumed]) { s.trainer.dispose(); s.model.dispose(); }
});

test.serial('losses and accuracy counts are read after every backward of the step is queued (no wait mid-step)', async (t) => {
  const plain = setup({ totalSteps: 4 }), deferred = setup({ totalSteps: 4 });
  deferred.model.deferCount = true;
  for (let s = 0; s < 2; s++) { await plain.trainer.trainStep(); await deferred.trainer.trainStep(); }
  t.deepEqual(deferred.model.readsAfterBackward, [true, true, true, true], 'two steps of two micro-batches, each read after the backwards');
  t.deepEqual(core(deferred.trainer.history), core(plain.trainer.history));
  t.deepEqual(deferred.trainer.history.map((h) => h.correct), plain.trainer.history.map((h) => h.correct));
  for (const r of [plain, deferred]) { r.trainer.dispose(); r.model.dispose(); }
});

test.serial('a non-finite loss skips the step, names its samples, and leaves the weights untouched', async (t) => {
  // Which micro-batch holds sample 0 is decided by the shuffle; find the step that draws it.
  const probe = new RegressionData(37, 3, 5);
  let micro = 0;
  for (;; micro++) { const b = await probe.next(); const has = b.sampleIds.includes('s0'); b.dispose!(); if (has) break; }
  const badStep = Math.floor(micro / 2) + 1;
  const { model, trainer, warnings } = setup({ nanSamples: new Set([0]), totalSteps: 12 });
  let before: Record<string, number[]> = {};
  for (let s = 1; s <= badStep; s++) {
    if (s === badStep) before = model.snapshot();
    await trainer.trainStep();
  }
  const h = trainer.history[badStep - 1];
  t.true(h.skipped);
  t.true(Number.isNaN(h.loss));
  t.deepEqual(model.snapshot(), before, 'no update on a skipped step');
  t.is(trainer.skipped.length, 1);
  t.true(trainer.skipped[0].sampleIds.includes('s0'));
  t.regex(warnings[0], new RegExp(`^step ${badStep} skipped \\(loss is NaN in micro-batch ${micro % 2}\\); samples: .*\\bs0\\b`));
  await trainer.trainStep();
  t.false(trainer.history[badStep].skipped, 'the next step trains normally');
  t.true(model.params.get('abstractor.fc.weight')!.grad === null);
  trainer.dispose(); model.dispose();
});

test.serial('a non-finite gradient norm skips too; too many skips stop the run with an error', async (t) => {
  const { model, trainer, warnings } = setup({ maxSkippedSteps: 2, totalSteps: 10 });
  model.poisonGrad = true;
  const before = model.snapshot();
  await trainer.trainStep();
  await trainer.trainStep();
  t.deepEqual(model.snapshot(), before);
  t.regex(warnings[0], /skipped \(gradient norm is (Infinity|NaN)\)/);
  const e = await t.throwsAsync(trainer.trainStep(), { instanceOf: TrainingError });
  t.regex(e!.message, /3 non-finite steps exceed training\.max_skipped_steps=2/);
  trainer.dispose(); model.dispose();
});

test.serial('run() writes metrics.jsonl, TensorBoard events and plots; refuses a folder with newer checkpoints', async (t) => {
  const dir = tmp();
  const { model, trainer, logs } = setup({ outDir: dir, totalSteps: 6, plots: true, checkpointEvery: 3, peakFlops: 1e9,
    flopsPerStep: ({ tokens }) => 6 * 18 * tokens });
  const r = await trainer.run();
  t.deepEqual(r.records.map((x) => x.step), [2, 4, 6]);
  t.true(r.records.every((x) => x.utilisation !== null && x.utilisation > 0 && x.tokens_per_s > 0));
  t.true(r.records.every((x) => x.accuracy !== undefined));
  t.regex(logs[0], /^step 2\/6 \| loss \d\.\d{4} \| grad [\d.]+ \| lr [\d.e+-]+ \| \d+ ms\/step \| \d+ tok\/s \| 0\.0 img\/s \| util [\d.]+% \| peak /);
  t.true(logs.some((l) => l.startsWith('saved ') && l.endsWith('ckpt-6')));
  t.true(existsSync(join(dir, 'plots', 'loss.svg')) && existsSync(join(dir, 'plots', 'loss.png')));
  t.true(existsSync(join(dir, 'plots', 'accuracy.png')));
  t.is(readdirSync(join(dir, 'tensorboard')).filter((f) => f.startsWith('events.out.tfevents.')).length, 1);
  trainer.dispose(); model.dispose();
  const again = setup({ outDir: dir, totalSteps: 6 });
  await t.throwsAsync(again.trainer.run(), { instanceOf: CheckpointError, message: /already holds ckpt-6, ckpt-3, newer than this run's starting step 0/ });
  again.trainer.dispose(); again.model.dispose();
});

test.serial('resume checks the stage and the parameter shapes', async (t) => {
  const dir = tmp();
  const a = setup({ outDir: dir, totalSteps: 2 });
  await a.trainer.run();
  const b = setup({ outDir: dir, totalSteps: 2, stage: 2 });
  await t.throwsAsync(b.trainer.resumeFrom(join(dir, 'checkpoints', 'ckpt-2')), { instanceOf: CheckpointError, message: /from stage 1, this run is stage 2/ });
  const c = setup({ outDir: dir, totalSteps: 2 });
  const w = c.model.params.get('abstractor.fc.bias')!;
  c.model.params.set('abstractor.fc.bias', keep(full([4], 0, { requiresGrad: true })));
  (c.trainer['o'].trainable as Map<string, Tensor>).set('abstractor.fc.bias', c.model.params.get('abstractor.fc.bias')!);
  await t.throwsAsync(c.trainer.resumeFrom(join(dir, 'checkpoints', 'ckpt-2')), { instanceOf: CheckpointError, message: /abstractor\.fc\.bias is f32\[3\], the model has f32\[4\]/ });
  w.dispose();
  for (const s of [a, b, c]) { s.trainer.dispose(); s.model.dispose(); }
});

test.serial('a run killed while saving resumes from the previous checkpoint and ends bit-identical', async (t) => {
  const dir = tmp();
  const child = spawn(process.execPath, ['--import', 'tsx', 'test/train/helpers/train-then-hang.ts', dir], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '', err = '';
  child.stderr.on('data', (d) => { err += d; });
  const exited = new Promise((res) => child.on('exit', res));
  await new Promise<void>((res, rej) => {
    child.stdout.on('data', (d) => { out += d; if (out.includes('MIDWAY')) res(); });
    child.on('exit', () => rej(new Error(`child exited early: ${out} ${err}`)));
  });
  child.kill('SIGKILL');
  await exited;
  t.true(existsSync(join(dir, 'checkpoints', 'ckpt-6.tmp')));

  const resumed = setup({ outDir: dir, totalSteps: 9, checkpointEvery: 2, keepLast: 3 });
  const ckpt = await resolveResume(join(dir, 'checkpoints'), 'auto');
  t.is(ckpt, join(dir, 'checkpoints', 'ckpt-4'));
  await resumed.trainer.resumeFrom(ckpt!);
  await resumed.trainer.run();
  const straight = setup({ totalSteps: 9 });
  for (let i = 0; i < 9; i++) await straight.trainer.trainStep();
  t.deepEqual(core(resumed.trainer.history), core(straight.trainer.history));
  t.deepEqual(resumed.model.snapshot(), straight.model.snapshot());
  t.deepEqual(readRecords(join(dir, 'metrics.jsonl')).map((r) => r.step), [2, 4, 6, 8, 9], 'the killed attempt\'s step-6 record was replaced');
  t.deepEqual(readdirSync(join(dir, 'checkpoints')).sort(), ['ckpt-6', 'ckpt-8', 'ckpt-9', 'latest']);
  for (const s of [resumed, straight]) { s.trainer.dispose(); s.model.dispose(); }
});

// The device path (GradOps.stepControl + Optimizer.stepControlled): the native backend's control block instead of a
// host read of the gradient norm before the optimizer. Same numbers as the host path, and the same skipping.
function deviceSetup(o: Parameters<typeof setup>[0] & { hostPath?: boolean } = {}) {
  let opt: OwlOptimizer | null = null;
  const r = setup({
    ...o,
    gradOps: nativeGradOps,
    makeOptimizer: (trainable) => {
      opt = new OwlOptimizer(decayGroups(trainable, 0.01, ['(^|\\.)bias$']), { lr: 0.05, betas: [0.9, 0.98], eps: 1e-8, weight_decay: 0.01 } as never);
      const o2 = opt;
      // without stepControlled/undoStep the trainer reads the norm on the host first (the path W > 1 takes)
      return o.hostPath ? { step: (lr: number, g?: number) => o2.step(lr, g), exportState: () => o2.exportState(), importState: (s: OptimizerState) => o2.importState(s), dispose: () => o2.dispose() } : o2;
    },
  });
  return { ...r, optimizerState: () => { const s = opt!.exportState(); return { meta: s.meta, tensors: Object.fromEntries([...s.tensors].map(([k, v]) => [k, Array.from(v.data<'f32'>())])) }; } };
}

test.serial('the optimizer reads clipping and skipping from the device: the same steps as the host path, bit for bit', async (t) => {
  const host = deviceSetup({ hostPath: true, totalSteps: 5 }), dev = deviceSetup({ totalSteps: 5 });
  for (let s = 0; s < 5; s++) { await host.trainer.trainStep(); await dev.trainer.trainStep(); }
  t.deepEqual(core(dev.trainer.history), core(host.trainer.history));
  t.true(dev.trainer.history.some((h) => h.gradNorm > 0.5), 'clipping was active in some step');
  t.deepEqual(dev.model.snapshot(), host.model.snapshot());
  t.deepEqual(dev.optimizerState(), host.optimizerState());
  for (const r of [host, dev]) { r.trainer.dispose(); r.model.dispose(); }
});

test.serial('device control: a non-finite loss or gradient skips the update on the device, step counts restored', async (t) => {
  for (const kind of ['loss', 'grad'] as const) {
    const ref = deviceSetup({ totalSteps: 6 });
    const bad = deviceSetup({ totalSteps: 6, nanSamples: kind === 'loss' ? new Set(Array.from({ length: 37 }, (_, i) => i)) : undefined });
    if (kind === 'grad') bad.model.poisonGrad = true;
    const before = bad.model.snapshot();
    await bad.trainer.trainStep();
    t.true(bad.trainer.history[0].skipped, kind);
    t.deepEqual(bad.model.snapshot(), before, `${kind}: the device updated nothing`);
    t.regex(bad.warnings[0], kind === 'loss' ? /skipped \(loss is NaN in micro-batch 0\)/ : /skipped \(gradient norm is (Infinity|NaN)\)/);
    t.deepEqual(bad.optimizerState(), ref.optimizerState(), `${kind}: no optimizer state from the skipped step`);
    // the next step trains as a first step would
    bad.model.poisonGrad = false;
    for (const r of [ref, bad]) { r.trainer.dispose(); r.model.dispose(); }
  }
});

// The step loop queues step N+1's forward and backward before reading step N's results (device control, one
// process): what it changes is only when the host waits, so every number, checkpoint and record must be those of
// steps run one after another. `seen`: the trainer's finished steps at each draw from the data stream.
function pipelineSetup(pipeline: boolean, o: Parameters<typeof deviceSetup>[0] = {}) {
  const r = deviceSetup({ totalSteps: 9, nanSamples: new Set([14]), ...o, pipeline });
  const next = r.data.next.bind(r.data), seen: number[] = [];
  r.data.next = async () => { seen.push(r.trainer.step); return next(); };
  return { ...r, seen };
}

test.serial('run() queues each step before reading the previous one: the same steps, skips, weights, optimizer state and records as one after another', async (t) => {
  const liveBefore = liveTensors();
  const dirs = [tmp(), tmp()];
  const [seq, pip] = [false, true].map((p, i) => pipelineSetup(p, { outDir: dirs[i], checkpointEvery: 4, keepLast: 3 }));
  for (const r of [seq, pip]) await r.trainer.run();
  t.deepEqual(core(pip.trainer.history), core(seq.trainer.history));
  t.true(pip.trainer.history.some((h) => h.skipped), 'a step was skipped (non-finite loss) inside the pipelined stretch');
  t.deepEqual(pip.trainer.skipped, seq.trainer.skipped);
  t.deepEqual(pip.model.snapshot(), seq.model.snapshot());
  t.deepEqual(pip.optimizerState(), seq.optimizerState());
  t.deepEqual(recordCore(dirs[1]), recordCore(dirs[0]));
  // one after another: step k's two micro-batches are drawn after step k-1 finished; queued ahead, after step k-2 —
  // except after a checkpoint (4, 8) and at the start
  t.deepEqual(seq.seen, [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8]);
  t.deepEqual(pip.seen, [0, 0, 0, 0, 1, 1, 2, 2, 4, 4, 4, 4, 5, 5, 6, 6, 8, 8]);
  t.true(pip.trainer.history.every((h) => h.ms >= 0));
  // the checkpoint after step 4 holds step 4's state alone: resumed one step at a time, it ends where both runs did
  const res = pipelineSetup(false, { outDir: tmp(), checkpointEvery: 4 });
  await res.trainer.resumeFrom(join(dirs[1], 'checkpoints', 'ckpt-4'));
  await res.trainer.run();
  t.deepEqual(res.model.snapshot(), seq.model.snapshot());
  for (const r of [seq, pip, res]) { r.trainer.dispose(); r.model.dispose(); }
  t.true(liveTensors() <= liveBefore, 'nothing left held (earlier tests\' tensors may be collected meanwhile)');
});

test.serial('a stop asked while the next step is queued ends after that step, with a checkpoint a resume continues bit for bit', async (t) => {
  const straight = pipelineSetup(false, { outDir: tmp(), checkpointEvery: 4 });
  await straight.trainer.run();
  const dir = tmp();
  const a: ReturnType<typeof pipelineSetup> = pipelineSetup(true, { outDir: dir, checkpointEvery: 4, stopRequested: () => a.trainer.step >= 5 });
  const r = await a.trainer.run();
  t.true(r.interrupted);
  t.is(r.steps, 6, 'step 6 was queued when the stop came: it finished, and the run stopped there');
  t.true(a.logs.some((l) => /stopped at step 6\/9/.test(l)));
  const b = pipelineSetup(true, { outDir: dir, checkpointEvery: 4 });
  await b.trainer.resumeFrom(join(dir, 'checkpoints', 'ckpt-6'));
  await b.trainer.run();
  t.deepEqual(b.model.snapshot(), straight.model.snapshot());
  const asStored = (h: StepStats[]) => JSON.parse(JSON.stringify(core(h)));  // (a resumed history comes from JSON: NaN is null)
  t.deepEqual(asStored(b.trainer.history), asStored(straight.trainer.history));
  for (const s of [straight, a, b]) { s.trainer.dispose(); s.model.dispose(); }
});

test.serial('a step that fails while queued ahead: the step before it is finished and recorded, then its error stops the run', async (t) => {
  const liveBefore = liveTensors();
  for (const pipeline of [false, true]) {
    const a = pipelineSetup(pipeline);
    const next = a.data.next.bind(a.data);
    let calls = 0;
    a.data.next = async () => { if (++calls === 11) throw new Error('unreadable batch in step 6'); return next(); };
    await t.throwsAsync(a.trainer.run(), { message: /unreadable batch in step 6/ });
    t.is(a.trainer.step, 5, `pipeline ${pipeline}`);
    t.deepEqual(a.trainer.history.map((h) => h.step), [1, 2, 3, 4, 5]);
    t.true((a.trainer['params'] as Tensor[]).every((p) => p.grad === null), 'no gradient of the failed step is left held');
    a.trainer.dispose(); a.model.dispose();
  }
  t.true(liveTensors() <= liveBefore, 'nothing left held (earlier tests\' tensors may be collected meanwhile)');
});

test.serial('an update that fails to be queued releases its step (losses, counts, gradients) and the trainer can go on', async (t) => {
  const r = deviceSetup({ totalSteps: 4 });
  await r.trainer.trainStep();
  const opt = r.trainer['o'].optimizer as OwlOptimizer;
  const real = opt.stepControlled.bind(opt);
  opt.stepControlled = () => { throw new Error('queueing the update failed'); };
  const before = liveTensors();
  await t.throwsAsync(r.trainer.trainStep(), { message: /queueing the update failed/ });
  t.true(liveTensors() <= before, 'nothing of the failed step left held');
  t.true((r.trainer['params'] as Tensor[]).every((p) => p.grad === null));
  t.is(r.trainer.step, 1);
  opt.stepControlled = real;
  const s = await r.trainer.trainStep();
  t.is(s.step, 2);
  t.true(Number.isFinite(s.loss));
  r.trainer.dispose(); r.model.dispose();
});

test.serial('trainSteps(n): n steps queued ahead where they may, the same numbers as trainStep() n times; by default not on the CPU; OWLET_PIPELINE=0 and pipeline: false turn it off', async (t) => {
  const one = pipelineSetup(false), many = pipelineSetup(true), off = pipelineSetup(true), auto = deviceSetup({ totalSteps: 9 });
  for (let i = 0; i < 5; i++) await one.trainer.trainStep();
  const got = await many.trainer.trainSteps(5);
  t.deepEqual(core(got), core(one.trainer.history));
  t.deepEqual(many.model.snapshot(), one.model.snapshot());
  t.deepEqual(many.seen, [0, 0, 0, 0, 1, 1, 2, 2, 3, 3]);
  process.env.OWLET_PIPELINE = '0';
  try { await off.trainer.trainSteps(5); } finally { delete process.env.OWLET_PIPELINE; }
  t.deepEqual(off.seen, [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]);
  t.is((await many.trainer.trainSteps(100)).length, 4, 'never past totalSteps');
  t.deepEqual(await many.trainer.trainSteps(1), [], 'nothing after totalSteps');
  t.deepEqual(await one.trainer.trainSteps(0), []);
  t.is(one.trainer.step, 5);
  await t.throwsAsync(one.trainer.trainSteps(1.5), { instanceOf: TrainingError, message: /count must be an integer >= 0/ });
  // by default only where the device runs queued work asynchronously: not on the CPU
  const next = auto.data.next.bind(auto.data), seen: number[] = [];
  auto.data.next = async () => { seen.push(auto.trainer.step); return next(); };
  await auto.trainer.trainSteps(3);
  t.deepEqual(seen, [0, 0, 1, 1, 2, 2]);
  for (const r of [one, many, off, auto]) { r.trainer.dispose(); r.model.dispose(); }
});

// Resume audit (session 10): a run stopped after a checkpoint resumes with the records an uninterrupted run writes —
// a record covers the same steps (the steps since the last record go back into the interval meter), and a checkpoint
// step whose evaluation did not finish is evaluated and recorded on resume.
const recordCore = (dir: string) => readRecords(join(dir, 'metrics.jsonl'))
  .map((r) => ({ step: r.step, loss: r.loss, grad_norm: r.grad_norm, lr: r.lr, eval_loss: (r as unknown as Record<string, unknown>).eval_loss }));

test.serial('a resumed run writes the records of an uninterrupted one: the steps before the checkpoint count in the next record', async (t) => {
  const opts = { totalSteps: 8, checkpointEvery: 3, logEvery: 4 };
  const straight = setup({ ...opts, outDir: tmp() });
  await straight.trainer.run();
  const dir = tmp();
  const a = setup({ ...opts, outDir: dir });
  const next = a.data.next.bind(a.data);
  let calls = 0;
  a.data.next = async () => { if (++calls === 9) throw new Error('stopped in step 5'); return next(); };
  await t.throwsAsync(a.trainer.run(), { message: /stopped in step 5/ });
  const b = setup({ ...opts, outDir: dir });
  await b.trainer.resumeFrom(join(dir, 'checkpoints', 'ckpt-3'));
  await b.trainer.run();
  t.deepEqual(recordCore(dir), recordCore(straight.trainer['o'].outDir!));
  t.deepEqual(recordCore(dir).map((r) => r.step), [4, 8]);
  for (const s of [straight, a, b]) { s.trainer.dispose(); s.model.dispose(); }
});

test.serial('a run stopped in the evaluation after a checkpoint evaluates that step on resume and writes its record', async (t) => {
  let failAt = 3;
  const evaluate = { every: 3, run: async (step: number) => {
    if (step === failAt) throw new Error(`evaluation of step ${step} stopped`);
    return { loss: 1 / step };
  } };
  const opts = { totalSteps: 6, checkpointEvery: 3, logEvery: 2, evaluate };
  failAt = -1;
  const straightDir = tmp();
  const straight = setup({ ...opts, outDir: straightDir });
  await straight.trainer.run();
  failAt = 3;
  const dir = tmp();
  const a = setup({ ...opts, outDir: dir });
  await t.throwsAsync(a.trainer.run(), { message: /evaluation of step 3 stopped/ });
  t.false(readRecords(join(dir, 'metrics.jsonl')).some((r) => r.step === 3), 'no record of step 3 without its evaluation');
  failAt = -1;
  const b = setup({ ...opts, outDir: dir });
  await b.trainer.resumeFrom(join(dir, 'checkpoints', 'ckpt-3'));
  await b.trainer.run();
  t.deepEqual(recordCore(dir), recordCore(straightDir));
  t.deepEqual(recordCore(dir).map((r) => [r.step, r.eval_loss]), [[2, undefined], [3, 1 / 3], [4, undefined], [6, 1 / 6]]);
  for (const s of [straight, a, b]) { s.trainer.dispose(); s.model.dispose(); }
});

test.serial('the first step hands the model and the optimizer one store of working copies, the end of the run or the trainer takes it back; OWLET_WORKING_COPIES=0: none', async (t) => {
  for (const [off, steps] of [[false, false], [true, false], [false, true]]) {
    const s = setup({ totalSteps: 2 });
    const seen: { model: (WorkingCopies | null)[]; opt: (WorkingCopies | null)[] } = { model: [], opt: [] };
    Object.assign(s.model, { useWorkingCopies: (c: WorkingCopies | null) => seen.model.push(c) });
    Object.assign(s.trainer['o'].optimizer, { useWorkingCopies: (c: WorkingCopies | null) => seen.opt.push(c) });
    if (off) process.env.OWLET_WORKING_COPIES = '0';
    try {
      if (steps) {
        await s.trainer.trainStep();
        await s.trainer.trainStep();
        t.deepEqual(seen.model.length, 1, 'held between steps');
        s.trainer.dispose();
      } else {
        await s.trainer.run();
      }
    } finally { delete process.env.OWLET_WORKING_COPIES; }
    if (off) {
      t.deepEqual(seen, { model: [], opt: [] });
    } else {
      t.is(seen.model.length, 2);
      t.true(seen.model[0] instanceof WorkingCopies);
      t.is(seen.opt[0], seen.model[0], 'one store for both');
      t.deepEqual([seen.model[1], seen.opt[1]], [null, null], 'taken back');
    }
    if (!steps) s.trainer.dispose();
    s.model.dispose();
  }
});

test.serial('the backward leaves gradients in the compute dtype only for an optimizer and reductions that read them, in one process, unless OWLET_LOWP_GRADS=0', (t) => {
  const s = setup({ totalSteps: 2 });
  const on = () => s.trainer['lowPrecisionGrads'] as boolean;
  t.false(on(), 'an optimizer that does not say it reads them');
  Object.assign(s.trainer['o'].optimizer, { readsLowPrecisionGrads: true });
  t.is(on(), s.trainer['gradOps'].readsLowPrecisionGrads === true, 'then as the gradient reductions say');
  t.true(nativeGradOps.readsLowPrecisionGrads);
  Object.assign(s.trainer, { gradOps: nativeGradOps });
  t.true(on());
  process.env.OWLET_LOWP_GRADS = '0';
  try { t.false(on(), 'switched off'); } finally { delete process.env.OWLET_LOWP_GRADS; }
  Object.assign(s.trainer, { worldSize: 2 });
  t.false(on(), 'gradients reduced across ranks are fp32');
  t.true(new OwlOptimizer([], { lr: 0.05, betas: [0.9, 0.98], eps: 1e-8, weight_decay: 0.01 } as never).readsLowPrecisionGrads);
  s.trainer.dispose();
  s.model.dispose();
});

test('OwlOptimizer rewrites the working copies it was given in its step', (t) => {
  scope(() => {
    const p = tensor(Float32Array.from([0.5, -1.25, 3, 7.1]), [4], { name: 'abstractor.fc.weight', requiresGrad: true });
    const opt = new OwlOptimizer([{ name: 'decay', params: new Map([['abstractor.fc.weight', p]]), weightDecay: 0.01 }],
      { lr: 0.05, betas: [0.9, 0.98], eps: 1e-8, weight_decay: 0.01 } as never);
    const store = new WorkingCopies();
    opt.useWorkingCopies(store);
    const [copy] = store.of([p]);
    const before = Array.from(copy.data<'bf16'>());
    p.grad = tensor(Float32Array.from([1, -2, 0.5, 0.25]), [4]);
    opt.step(0.05);
    t.notDeepEqual(Array.from(copy.data<'bf16'>()), before);
    t.deepEqual(Array.from(copy.data<'bf16'>()), Array.from(cast(p, 'bf16').data<'bf16'>()));
    opt.dispose();
    store.dispose();
  });
});
