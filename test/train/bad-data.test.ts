// What a run does with data it cannot use and with a damaged run folder (the CLI audit of session 9): every case once
// hung, lost work, trained on nothing or failed deep inside a step. Each now stops with a message that names the data
// or the setting, warns, or skips — and never loses a checkpoint.
import test from 'ava';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateDemoData } from '../../lib/data/index.ts';
import { dump } from '../../lib/model/dump.ts';
import { owlComponents } from '../../lib/train/owl-components.ts';
import { trainStage } from '../../lib/train/stage.ts';
import { tinyStageConfig } from './helpers/tiny-stage.ts';

const tmp = mkdtempSync(join(tmpdir(), 'owlet-baddata-'));
test.after.always(() => rmSync(tmp, { recursive: true, force: true }));

const caption = (image: string) => JSON.stringify({ text: 'The following is a conversation.\nHuman: <image>\nHuman: What is in the image?\nAI: a red circle.', image: [image] });

const config = tinyStageConfig;

let data = '';
test.before(async () => {
  await generateDemoData({ out: join(tmp, 'data'), trainImages: 4, evalImages: 2, imageSize: 56, system: 'Hi.' });
  data = join(tmp, 'data');
  writeFileSync(join(tmp, 'missing.jsonl'), [caption(join(tmp, 'nope1.png')), caption(join(tmp, 'nope2.png'))].join('\n') + '\n');
  writeFileSync(join(tmp, 'text-only.jsonl'), Array.from({ length: 4 }, (_, i) =>
    JSON.stringify({ text: `Hi.\nHuman: what is ${i} plus 1?\nAI: ${i + 1}.` })).join('\n') + '\n');
  writeFileSync(join(tmp, 'no-answer.jsonl'), Array.from({ length: 4 }, (_, i) => JSON.stringify({ text: `A chat.\nUser: hi ${i}\nAssistant: ok.` })).join('\n') + '\n');
});

const quiet = (warnings: string[] = []) => ({ log: () => {}, warn: (l: string) => warnings.push(l) });
const trainFile = () => join(data, readdirSync(data).find((f) => f.startsWith('train_captions'))!);

test('a training stream with no usable sample stops with the reason instead of spinning forever', async (t) => {
  const e = await t.throwsAsync(trainStage(config(join(tmp, 'r-missing'), { train: join(tmp, 'missing.jsonl') }), owlComponents(), quiet()));
  t.regex(e!.message, /the train data \(missing\.jsonl\).*no sample of a whole pass.*nope1\.png: file not found/);
});

test('an image size other than the model\'s is a config error naming both settings', async (t) => {
  const e = await t.throwsAsync(trainStage(config(join(tmp, 'r-size'), { train: trainFile(), imageSize: 28 }), owlComponents(), quiet()));
  t.regex(e!.message, /data\.image\.size is 28 but the model's vision_config\.image_size is 56/);
});

test('micro-batches with no token in the loss skip their step (the official loss is NaN there), named', async (t) => {
  const warnings: string[] = [];
  const r = await trainStage(config(join(tmp, 'r-noanswer'), { train: join(tmp, 'no-answer.jsonl'), stageId: 0 }), owlComponents(), quiet(warnings));
  t.is(r.skipped.length, 2);
  t.true(warnings.some((w) => /step 1 skipped \(no token of micro-batch 0 counts in the loss/.test(w)));
});

test('a skipped sample is reported, and a failing evaluation comes after the last checkpoint', async (t) => {
  const mixed = join(data, 'mixed.jsonl'); // beside the demo's file: its image paths are relative to it
  writeFileSync(mixed, caption(join(tmp, 'nope1.png')) + '\n' + readFileSync(trainFile(), 'utf8'));
  const warnings: string[] = [];
  const out = join(tmp, 'r-eval');
  const e = await t.throwsAsync(trainStage(config(out, { train: mixed, eval: join(tmp, 'missing.jsonl'), steps: 2, saveEvery: 0 }), owlComponents(), quiet(warnings)));
  t.regex(e!.message, /the eval data \(missing\.jsonl\)/);
  t.true(existsSync(join(out, 'checkpoints', 'ckpt-2', 'manifest.json')), 'the last step was saved before the evaluation failed');
  t.true(warnings.some((w) => /the train data \(mixed\.jsonl\): skipped .*mixed\.jsonl:1: image .*nope1\.png/.test(w)), warnings.join('\n'));
});

test('a damaged newer checkpoint is moved aside so the run can go on; an intact one is refused with a way out', async (t) => {
  const out = join(tmp, 'r-damaged');
  await trainStage(config(out, { train: trainFile(), steps: 4, saveEvery: 2 }), owlComponents(), quiet());
  const ck = join(out, 'checkpoints');
  truncateSync(join(ck, 'ckpt-4', readdirSync(join(ck, 'ckpt-4')).find((f) => f.endsWith('.safetensors'))!), 100);
  const warnings: string[] = [];
  const r = await trainStage(config(out, { train: trainFile(), steps: 4, saveEvery: 2 }), owlComponents(), { ...quiet(warnings), resume: 'auto' });
  t.is(r.steps, 4);
  t.true(existsSync(join(ck, 'ckpt-4.damaged')) && existsSync(join(ck, 'ckpt-4', 'manifest.json')));
  t.true(warnings.some((w) => /moved the damaged checkpoint .*ckpt-4 aside/.test(w)));
  // going back to ckpt-2 while an intact ckpt-4 exists would overwrite it: refused, saying how to proceed, and
  // without touching the folder (its config.json was rewritten before the refusal)
  const before = readFileSync(join(out, 'config.json'), 'utf8');
  const other = config(out, { train: trainFile(), steps: 4, saveEvery: 2 });
  other.optimizer.lr = 0.5;
  const e = await t.throwsAsync(trainStage(other, owlComponents(), { ...quiet(), resume: join(ck, 'ckpt-2') }));
  t.regex(e!.message, /holds ckpt-4, newer than this run's starting step 2: continue from the newest with --resume auto; .*first move ckpt-4 out/);
  t.is(readFileSync(join(out, 'config.json'), 'utf8'), before);
});

test('dump refuses an output that would land in the model folder, and a folder as output', (t) => {
  const model = join(tmp, 'model');
  mkdirSync(model, { recursive: true });
  const o = { modelDir: model, batchFile: join(model, 'batch.safetensors'), stage: 1 as const };
  t.throws(() => dump({ ...o, out: model }), { message: /is a folder; name the file to write/ });
  t.throws(() => dump({ ...o, out: join(model, 'x.safetensors') }), { message: /inside the model folder/ });
  t.throws(() => dump({ ...o, out: join(tmp, 'nodir', 'x.safetensors') }), { message: /does not exist/ });
});

// Stage 1 trains the vision side; a micro-batch of text-only samples never reaches it. Its loss counts and its backward
// is skipped: it used to throw ("the loss does not depend on any tensor that requires grad") at every resume too.
test('stage-1 micro-batches of text-only samples train nothing and do not stop the run', async (t) => {
  const out = join(tmp, 'r-textonly');
  const r = await trainStage(config(out, { train: join(tmp, 'text-only.jsonl'), steps: 2 }), owlComponents(), quiet());
  t.is(r.steps, 2);
  t.deepEqual(r.skipped, []);
  t.true(r.history.length === 2 && r.history.every((s) => Number.isFinite(s.loss)), JSON.stringify(r.history.map((s) => s.loss)));
});
