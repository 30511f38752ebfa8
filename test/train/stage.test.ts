import test from 'ava';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseConfigText, validateConfig } from '../../lib/train/config.ts';
import type { Components } from '../../lib/train/components.ts';
import { trainStage } from '../../lib/train/stage.ts';
import { OutOfMemoryError } from '../../lib/tensor/errors.ts';
import { HostAdamW, RegressionData, RegressionModel, fakeIO, hostGradOps, type RegressionBatch } from './helpers/fakes.ts';

const config = (out: string, extra = '') => validateConfig(parseConfigText(`
run: { out_dir: ${out}, seed: 3, device: cpu }
model: { preset: mplug-owl-llama-7b }
stage: { id: 1, train: [abstractor] }
data: { train: [{ path: unused.jsonl }], eval: [{ path: unused-eval.jsonl }], max_length: 4, micro_batch: 3 }
optimizer: { lr: 0.05, betas: [0.9, 0.98], weight_decay: 0.01 }
schedule: { type: cosine, warmup_steps: 2, min_lr: 0.005 }
training: { epochs: 1, grad_accum: 2, clip: 1.0 }
logging: { every: 2, eval_every: 3, eval_batches: 2, save_every: 3, keep_last: 2, progress: false, peak_flops: 1.0e+15 }
${extra}`));

const components = (): Components<RegressionBatch> & { models: RegressionModel[] } => {
  const models: RegressionModel[] = [];
  return {
    models,
    async createModel() { const m = new RegressionModel(7); models.push(m); return m; },
    async createData(c, split) { return split === 'train' ? new RegressionData(37, c.data.micro_batch, c.run.seed) : new RegressionData(12, 3, 99); },
    createOptimizer: (groups, o) => new HostAdamW(groups, o.betas, o.eps),
    tensorIO: fakeIO,
    gradOps: hostGradOps, // the optimizer kernels of the addon are not in this branch yet
    async evaluate(model, data, batches) {
      let sum = 0;
      for (let i = 0; i < batches; i++) {
        const b = await data.next();
        const out = model.forward(b, { step: 0, micro: i, seed: 1, training: false });
        sum += out.loss.item();
        out.loss.dispose(); b.dispose!();
      }
      return { loss: sum / batches };
    },
  };
};

test.serial('trainStage runs a config end to end: steps from epochs, eval, checkpoints, metrics, plots; resume auto continues', async (t) => {
  const out = mkdtempSync(join(tmpdir(), 'owlet-stage-'));
  const logs: string[] = [];
  const c = components();
  try {
    const r = await trainStage(config(out), c, { log: (l) => logs.push(l) });
    t.is(r.totalSteps, 6); // ceil(1 epoch × ⌊12 micro-batches / 2⌋)
    t.is(r.steps, 6);
    t.is(r.resumedFrom, null);
    t.true(r.records.some((x) => typeof x.eval_loss === 'number'));
    t.true(r.records.every((x) => x.utilisation !== null));
    t.true(existsSync(join(out, 'checkpoints', 'ckpt-6', 'manifest.json')) && existsSync(join(out, 'checkpoints', 'ckpt-3')));
    t.true(existsSync(join(out, 'plots', 'loss.png')));
    t.is(JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')).run.seed, 3);
    t.true(logs.some((l) => /^step 6\/6 \| loss/.test(l)));
    // a longer schedule, resumed from the finished run's last checkpoint
    const longer = config(out);
    longer.training.epochs = 2;
    const r2 = await trainStage(longer, c, { resume: 'auto', log: (l) => logs.push(l) });
    t.is(r2.resumedFrom, join(out, 'checkpoints', 'ckpt-6'));
    t.is(r2.totalSteps, 12);
    t.is(r2.steps, 12);
    t.deepEqual(r2.history.slice(0, 6).map((h) => h.loss), r.history.map((h) => h.loss));
    t.true(logs.some((l) => l.startsWith('resumed from ') && l.endsWith('at step 6/12')));
  } finally {
    for (const m of c.models) m.dispose();
  }
});

test.serial('a device running out of memory stops the run with the allocator\'s message and what the stage needs', async (t) => {
  const out = mkdtempSync(join(tmpdir(), 'owlet-stage-oom-'));
  const c = components();
  c.createModel = async () => { throw new OutOfMemoryError('out of memory on cuda:0 while allocating 2.00 GiB: tensors hold 77.1 GiB', 'empty'); };
  const e = await t.throwsAsync(trainStage(config(out), c, { log: () => {} }), { instanceOf: OutOfMemoryError });
  t.regex(e!.message, /^out of memory on cuda:0 while allocating 2\.00 GiB: tensors hold 77\.1 GiB \(owlet estimate puts stage 1 at [\d.]+ GiB per device: /);
  t.regex(e!.message, /lower data\.micro_batch .* or data\.max_length\)$/);
  t.is(e!.op, 'empty');
});
