// The trainer's side of data parallelism, in one process: a stand-in process group plays the other rank (its
// contributions to the all-reduced step statistics are given by the test), so the decisions made from the reduced
// values can be checked directly: all ranks skip when any rank's loss is not finite, a parameter with a gradient on
// some rank gets zeros where it has none, rank 0 alone writes checkpoints holding every rank's data position.
import test from 'ava';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GradientReducer } from '../../lib/dist/grad-reducer.ts';
import { tensor, type Tensor } from '../../lib/tensor/index.ts';
import type { Collectives } from '../../lib/train/types.ts';
import { Rng } from '../../lib/train/rng.ts';
import { setup } from '../train/helpers/run-fixture.ts';

/** Rank `rank` of 2; `peer(local)` is what the other rank adds to allReduceNumbers (default: the same values). */
class PeerStub implements Collectives {
  readonly worldSize = 2;
  reduced: Tensor[][] = [];
  gathered: string[] = [];
  constructor(readonly rank: number, private readonly peer: (local: number[]) => number[] = (l) => l) {}
  allReduceMean(xs: Tensor[]): void { this.reduced.push(xs); } // the other rank had the same gradients
  allReduceNumbers(xs: number[]): number[] { const p = this.peer(xs); return xs.map((v, i) => v + p[i]); }
  broadcast(): void {}
  gather(value: string): string[] | null { this.gathered.push(value); return this.rank === 0 ? [value, value.replace('"rank":0', '"rank":1')] : null; }
  shareFromRoot(value?: string): string { return value ?? ''; }
}

/** The same, reducing gradients overlapped with the backward (the peer had the same gradients: the sum doubles them). */
class OverlapPeerStub extends PeerStub {
  started = 0;
  gradientReducer(params: Tensor[]): GradientReducer {
    return new GradientReducer(params, { worldSize: 2, startAllReduceSum: (xs) => {
      this.started++;
      this.reduced.push(xs);
      for (const x of xs) x.backend.scaleInplace([x.handle], 2);
      return { wait() {} };
    } }, 64);
  }
  allReduceMean(): void { throw new Error('the overlapped path must not all-reduce after the backward'); }
}

test('a non-finite loss on the other rank skips the step on this one too, naming that rank', async (t) => {
  // local = [loss, tokens, images, counted, correct, noCorrect, bad@0, bad@1, hasGrad…]
  const dist = new PeerStub(0, (l) => l.map((v, i) => (i === 7 ? 1 : i === 6 ? 0 : v)));
  const { model, trainer, warnings } = setup({ dist });
  const before = model.snapshot();
  const s = await trainer.trainStep();
  t.true(s.skipped);
  t.deepEqual(model.snapshot(), before, 'no update');
  t.is(dist.reduced.length, 0, 'no gradient all-reduce for a skipped step');
  t.regex(warnings[0], /^step 1 skipped \(non-finite loss on rank 1\)/);
  trainer.dispose(); model.dispose();
});

test('the step statistics are sums over ranks, the loss the mean of all W × A micro-batch losses; all W × A seeds drawn', async (t) => {
  let local: number[] = [];
  const dist = new PeerStub(0, (l) => { local = l; return l.map((v, i) => (i === 0 ? 1.5 : v)); });
  const { model, trainer } = setup({ dist }); // gradAccum 2
  const s = await trainer.trainStep();
  t.is(s.tokens, 2 * local[1]);
  t.is(s.counted, 2 * local[3]);
  t.is(s.loss, (local[0] + 1.5) / 4);
  t.is(dist.reduced.length, 1);
  const rng = new Rng(11);
  for (let i = 0; i < 4; i++) rng.nextSeed();
  t.deepEqual((trainer as unknown as { rng: Rng }).rng.state(), rng.state(), 'both ranks draw the seeds of all 4 micro-batches');
  trainer.dispose(); model.dispose();
});

test('a parameter with a gradient on another rank only gets zeros here, so every rank reduces the same list', async (t) => {
  const unused = (m: { params: Map<string, Tensor> }) => m.params.set('abstractor.unused', tensor(new Float32Array([1, 2]), [2], { name: 'abstractor.unused' }));
  // The peer reports a gradient for every parameter (its flags are all 1).
  const dist = new PeerStub(0, (l) => l.map((v, i) => (i >= 8 ? 1 : v)));
  const s1 = setup({ dist, prepare: unused });
  await s1.trainer.trainStep();
  t.deepEqual(dist.reduced[0].map((g) => g.shape.join('x')).sort(), ['2', '3', '3x5'], 'the unused parameter\'s zeros went in too');
  s1.trainer.dispose(); s1.model.dispose();
  // Nobody has one: it stays without a gradient (the optimizer leaves it alone).
  const none = new PeerStub(0);
  const s2 = setup({ dist: none, prepare: unused });
  await s2.trainer.trainStep();
  t.deepEqual(none.reduced[0].map((g) => g.shape.join('x')).sort(), ['3', '3x5']);
  s2.trainer.dispose(); s2.model.dispose();
});

test('rank 0 writes the checkpoint with both ranks\' data positions; rank 1 writes nothing', async (t) => {
  for (const rank of [0, 1]) {
    const dir = mkdtempSync(join(tmpdir(), `owlet-dist-ckpt-${rank}-`));
    const dist = new PeerStub(rank);
    const { model, trainer, logs } = setup({ dist, outDir: dir, totalSteps: 2, checkpointEvery: 2 });
    const r = await trainer.run();
    const [agreement, ...positions] = dist.gathered;
    t.deepEqual(JSON.parse(agreement)['training steps'], 2, 'the ranks compare their step counts before training');
    t.is(positions.length, 1, 'every rank contributes its position');
    if (rank === 0) {
      t.is(r.checkpoint, join(dir, 'checkpoints', 'ckpt-2'));
      const data = JSON.parse(readFileSync(join(r.checkpoint!, 'trainer_state.json'), 'utf8')).data;
      t.is(data.world, 2);
      t.is(data.ranks.length, 2);
      t.true(logs.some((l) => l.startsWith('step 2/2')));
    } else {
      t.is(r.checkpoint, null);
      t.false(existsSync(join(dir, 'checkpoints')) || existsSync(join(dir, 'metrics.jsonl')));
      t.deepEqual(logs, [], 'only rank 0 reports');
    }
    trainer.dispose(); model.dispose();
  }
});

test('with the overlapped reduction the steps update the weights exactly as with the all-reduce after the backward', async (t) => {
  const run = async (dist: PeerStub) => {
    const { model, trainer } = setup({ dist, totalSteps: 3 });
    for (let i = 0; i < 3; i++) await trainer.trainStep();
    const w = model.snapshot();
    trainer.dispose(); model.dispose();
    return w;
  };
  const overlapped = new OverlapPeerStub(0);
  t.deepEqual(await run(overlapped), await run(new PeerStub(0)));
  t.is(overlapped.started, 3 * 2, 'two buckets of at most 64 bytes (the bias, then the weight) per step');
});

test('overlapped: a parameter unused here keeps its reduced gradient when another rank had one, none when nobody had', async (t) => {
  const unused = (m: { params: Map<string, Tensor> }) => m.params.set('abstractor.unused', tensor(new Float32Array([1, 2]), [2], { name: 'abstractor.unused' }));
  for (const elsewhere of [true, false]) {
    const dist = new OverlapPeerStub(0, (l) => l.map((v, i) => (elsewhere && i >= 8 ? 1 : v)));
    const s = setup({ dist, prepare: unused });
    await s.trainer.trainStep();
    await s.trainer.trainStep(); // (the first step's learning rate is 0: warm-up)
    t.deepEqual(dist.reduced.slice(0, 2).flat().map((g) => g.shape.join('x')).sort(), ['2', '3', '3x5'], 'every rank reduces the same buckets');
    // AdamW with a zero gradient only decays the weight; without a gradient it leaves the weight alone.
    const after = s.model.snapshot()['abstractor.unused'];
    if (elsewhere) t.true(after[0] < 1 && after[1] < 2, `decayed: ${after}`);
    else t.deepEqual(after, [1, 2]);
    s.trainer.dispose(); s.model.dispose();
  }
});
