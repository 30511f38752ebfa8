// What a resume compares with its checkpoint (resume audit of session 10): settings that change what the trained
// weights mean are refused, other changes are named, and base weights other than the checkpoint's are refused.
import test from 'ava';
import { copyFileSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateDemoData } from '../../lib/data/index.ts';
import { owlComponents } from '../../lib/train/owl-components.ts';
import { resumeConfigChanges, weightsFingerprint } from '../../lib/train/resume-check.ts';
import { trainStage } from '../../lib/train/stage.ts';
import { tinyStageConfig } from './helpers/tiny-stage.ts';

const tmp = mkdtempSync(join(tmpdir(), 'owlet-resumecheck-'));
test.after.always(() => rmSync(tmp, { recursive: true, force: true }));
let train = '';
test.before(async () => {
  await generateDemoData({ out: join(tmp, 'data'), trainImages: 4, evalImages: 2, imageSize: 56, system: 'Hi.' });
  train = join(tmp, 'data', readdirSync(join(tmp, 'data')).find((f) => f.startsWith('train_captions'))!);
});
const quiet = (lines: string[] = []) => ({ log: (l: string) => lines.push(l), warn: (l: string) => lines.push(l) });

test('resumeConfigChanges: refused settings, named changes, ignored ones', (t) => {
  const saved = { run: { out_dir: 'a', seed: 1 }, stage: { id: 2, train: ['lora'], lora: { r: 8, alpha: 32 } }, optimizer: { lr: 1e-3 }, provenance: { base_weights: 'x' } };
  const now = { run: { out_dir: 'b', seed: 1 }, stage: { id: 2, train: ['lora'], lora: { r: 8, alpha: 16 } }, optimizer: { lr: 2e-3 }, logging: { progress: true } };
  t.deepEqual(resumeConfigChanges(saved, now), { refused: ['stage.lora.alpha: 32 → 16'], changed: ['optimizer.lr: 0.001 → 0.002'] });
  // the same files named relatively and absolutely are no change (the demo writes absolute paths, a config relative)
  const files = (p: string) => ({ model: { config: p }, data: { train: [{ path: `${p}/t.jsonl`, weight: 1 }] } });
  t.deepEqual(resumeConfigChanges(files(join(process.cwd(), 'runs/x')), files('runs/x')), { refused: [], changed: [] });
  t.deepEqual(resumeConfigChanges(files('runs/x'), files('runs/y')).changed.length, 2);
});

test('a resume names changed settings, refuses a change of the trained groups before touching the optimizer', async (t) => {
  const out = join(tmp, 'r1');
  await trainStage(tinyStageConfig(out, { train, steps: 2, saveEvery: 1 }), owlComponents(), quiet());
  const lines: string[] = [];
  await trainStage(tinyStageConfig(out, { train, steps: 3, saveEvery: 1, lr: 2e-3 }), owlComponents(), { ...quiet(lines), resume: 'auto' });
  t.true(lines.some((l) => /resuming with changed settings \(checkpoint → now\): optimizer\.lr: 0\.001 → 0\.002; training\.steps: 2 → 3/.test(l)), lines.join('\n'));
  const e = await t.throwsAsync(trainStage(tinyStageConfig(out, { train, steps: 4, groups: ['queries'] }), owlComponents(), { ...quiet(), resume: 'auto' }));
  t.regex(e!.message, /cannot resume .*ckpt-3 with another setting of what its weights are: stage\.train: \["queries","abstractor"\] → \["queries"\]/);
  // another architecture (one abstractor layer where the checkpoint trained two): named by the weights it trained,
  // before the optimizer's state is read; and nothing is named as "changed" for a resume that fails
  const two = tinyStageConfig(join(tmp, 'r1b'), { train, steps: 1, saveEvery: 1 });
  (two.model.sizes as { visual_abstractor_config: { num_hidden_layers: number } }).visual_abstractor_config.num_hidden_layers = 2;
  await trainStage(two, owlComponents(), quiet());
  const lines2: string[] = [];
  const e2 = await t.throwsAsync(trainStage(tinyStageConfig(join(tmp, 'r1b'), { train, steps: 2 }), owlComponents(), { ...quiet(lines2), resume: 'auto' }));
  t.regex(e2!.message, /trained weights this model does not train or does not have \(another architecture or fewer trained groups\): abstractor\.encoder\.layers\.1\./);
  t.false(lines2.some((l) => l.startsWith('resuming with changed settings')), lines2.join('\n'));
});

test('a resume over other base weights than the checkpoint was trained on is refused; a copy of the same ones is not', async (t) => {
  // two different "base models": the exports of two short runs with different seeds
  for (const [name, lr] of [['a', 1e-3], ['b', 5e-3]] as const) {
    await trainStage(tinyStageConfig(join(tmp, `base-${name}`), { train, steps: 1, lr }), owlComponents(), quiet());
  }
  const baseA = join(tmp, 'base-a', 'final'), baseB = join(tmp, 'base-b', 'final');
  t.not(weightsFingerprint(baseA), weightsFingerprint(baseB));
  const out = join(tmp, 'r2'), weights = join(tmp, 'weights');
  copyFileSync(join(baseA, 'model.safetensors'), join(tmp, 'weights.safetensors'));
  await trainStage(tinyStageConfig(out, { train, steps: 2, saveEvery: 1, weights: join(tmp, 'weights.safetensors') }), owlComponents(), quiet());
  // the same weights under another name: resumes
  copyFileSync(join(baseA, 'model.safetensors'), `${weights}-copy.safetensors`);
  await t.notThrowsAsync(trainStage(tinyStageConfig(out, { train, steps: 3, saveEvery: 1, weights: `${weights}-copy.safetensors` }), owlComponents(), { ...quiet(), resume: 'auto' }));
  // the file replaced by another model's: refused
  copyFileSync(join(baseB, 'model.safetensors'), join(tmp, 'weights.safetensors'));
  const e = await t.throwsAsync(trainStage(tinyStageConfig(out, { train, steps: 4, weights: join(tmp, 'weights.safetensors') }), owlComponents(), { ...quiet(), resume: 'auto' }));
  t.regex(e!.message, /model\.weights .*weights\.safetensors is not the base model checkpoint .*ckpt-3 was trained on/);
});
