// The built-in demo data: determinism, file formats, and the content rules of issue 4.
import test from 'ava';
import sharp from 'sharp';
import { mkdtempSync, rmSync, readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateDemoData, type DemoFiles } from '../../lib/data/demo.ts';
import { questionPool, caption, COLOR_RGB, COLORS, SHAPES, gridCode, gridText, GRID_STYLES, GRID_TOKENS, type GridStyle, nearMiss, sampleScene, sampleTurns, type Scene, type ColorName } from '../../lib/data/demo-scene.ts';
import { rng } from '../../lib/data/rng.ts';
import { llamaTokenizer } from '../../lib/data/tokenizer.ts';
import { JsonlDataset } from '../../lib/data/dataset.ts';
import { captionPrompt, IMAGE_TOKEN, SYSTEM_PROMPT } from '../../lib/data/template.ts';
import { tokenizeCaption, tokenizeConversation } from '../../lib/data/conversation.ts';

const root = mkdtempSync(join(tmpdir(), 'owlet-demo-'));
test.after.always(() => rmSync(root, { recursive: true, force: true }));
const opts = { trainImages: 14, evalImages: 5, seed: 3, maxTurns: 3, instructionsPerImage: 2 };
let a: DemoFiles, b: DemoFiles, c: DemoFiles;
test.before(async () => {
  a = await generateDemoData({ ...opts, out: join(root, 'a') });
  b = await generateDemoData({ ...opts, out: join(root, 'b') });
  c = await generateDemoData({ ...opts, seed: 4, out: join(root, 'c') });
});

const rows = (p: string) => readFileSync(p, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
const sha = (p: string) => createHash('sha256').update(readFileSync(p)).digest('hex');
type SceneRow = { image: string; shapes: { shape: string; color: string; row: number; col: number }[] };

test('same seed, same files; another seed, other data', (t) => {
  for (const k of ['trainCaptions', 'trainInstructions', 'trainText', 'evalInstructions', 'evalScenes'] as const) {
    t.is(readFileSync(a[k], 'utf8'), readFileSync(b[k], 'utf8'), k);
  }
  for (const r of rows(a.trainCaptions)) t.is(sha(join(a.out, r.image)), sha(join(b.out, r.image)));
  t.not(readFileSync(a.trainCaptions, 'utf8'), readFileSync(c.trainCaptions, 'utf8'));
});

test('files are in the official formats and load as datasets', (t) => {
  const ds = JsonlDataset.load([a.trainCaptions, a.trainInstructions, a.trainText]);
  t.is(ds.problems.length, 0);
  t.is(ds.size, 14 + 28 + 100);
  t.is(ds.record(0).kind, 'caption');
  t.is(ds.record(14).kind, 'instruction');
  t.is(ds.record(14).taskType, 'shapes_sft');
  t.true(ds.record(14).text.startsWith(`${SYSTEM_PROMPT}\nHuman: <image>\nHuman: `));
  t.is(ds.record(14 + 28).images.length, 0);
});

test('images: 224×224 RGB, white background, shapes of the scene colour in their cells only', async (t) => {
  const scenes: SceneRow[] = rows(a.trainScenes);
  for (const s of scenes.slice(0, 6)) {
    const { data, info } = await sharp(join(a.out, s.image)).raw().toBuffer({ resolveWithObject: true });
    t.deepEqual([info.width, info.height, info.channels], [224, 224, 3]);
    const cell = 224 / 3;
    for (let row = 0; row < 3; row++) for (let col = 0; col < 3; col++) {
      const placed = s.shapes.find((x) => x.row === row && x.col === col);
      let colored = 0, other = 0;
      for (let y = Math.ceil(row * cell); y < (row + 1) * cell - 1; y++) for (let x = Math.ceil(col * cell); x < (col + 1) * cell - 1; x++) {
        const o = (y * 224 + x) * 3, px = [data[o], data[o + 1], data[o + 2]];
        if (px.every((v) => v === 255)) continue;
        if (placed && px.every((v, i) => v === COLOR_RGB[placed.color as ColorName][i])) colored++; else other++;
      }
      if (placed) t.true(colored > 0.08 * cell * cell && other < colored, `${s.image} cell ${row},${col}`);
      else t.is(colored + other, 0, `${s.image} empty cell ${row},${col}`);
    }
  }
});

test('captions list the shapes in reading order with the issue\'s wording', (t) => {
  const caps = rows(a.trainCaptions), scenes: SceneRow[] = rows(a.trainScenes);
  caps.forEach((cap, i) => {
    const s = scenes[i];
    t.is(cap.image, s.image);
    const order = s.shapes.map((x) => x.row * 3 + x.col);
    t.deepEqual(order, [...order].sort((p, q) => p - q));
    const parts = s.shapes.map((x) => `a ${x.color} ${x.shape}`);
    const want = parts.length === 1 ? `${parts[0]}.` : parts.length === 2 ? `${parts[0]} and ${parts[1]}.` : `${parts[0]}, ${parts[1]} and ${parts[2]}.`;
    t.is(cap.text, want);
  });
  t.is(caption({ shapes: [{ shape: 'circle', color: 'red' }, { shape: 'square', color: 'blue' }, { shape: 'triangle', color: 'green' }] } as Scene),
    'a red circle, a blue square and a green triangle.');
});

test('instructions: questions are asked only when their answer is unique, and the answers are right', (t) => {
  const scenes = new Map<string, SceneRow>([...rows(a.trainScenes), ...rows(a.evalScenes)].map((s: SceneRow) => [s.image, s]));
  const kinds = new Set<string>();
  let yes = 0, no = 0;
  for (const file of [a.trainInstructions, a.evalInstructions]) {
    for (const r of rows(file)) {
      const s = scenes.get(r.image[0])!;
      const turns = [...(r.text as string).matchAll(/\nHuman: ([^\n]*)\nAI: ([^\n]*)/g)].map((m) => [m[1], m[2]]);
      t.true(turns.length >= 1 && turns.length <= 3);
      t.is(new Set(turns.map((x) => x[0])).size, turns.length, 'no repeated question');
      for (const [q, ans] of turns) {
        let m;
        if ((m = /^What color is the (\w+)\?$/.exec(q))) {
          const hits = s.shapes.filter((x) => x.shape === m![1]);
          t.is(hits.length, 1, q);
          t.is(ans, `${hits[0].color}.`);
          kinds.add('color');
        } else if ((m = /^What shape is the (\w+) one\?$/.exec(q))) {
          const hits = s.shapes.filter((x) => x.color === m![1]);
          t.is(hits.length, 1, q);
          t.is(ans, `${hits[0].shape}.`);
          kinds.add('shape');
        } else if (q === 'How many shapes are there?') {
          t.is(ans, `${['one', 'two', 'three'][s.shapes.length - 1]}.`);
          kinds.add('count');
        } else if ((m = /^Is there a (\w+) (\w+)\?$/.exec(q))) {
          const present = s.shapes.some((x) => x.color === m![1] && x.shape === m![2]);
          t.is(ans, present ? 'yes.' : 'no.');
          if (present) yes++; else no++;
          kinds.add('yesno');
        } else t.fail(`unexpected question ${q}`);
      }
    }
  }
  t.deepEqual([...kinds].sort(), ['color', 'count', 'shape', 'yesno']);
  t.true(yes > 0 && no > 0);
  // The pool itself: two circles → no colour question about "the circle"; a unique red → its shape question.
  const pool = questionPool({ shapes: [{ shape: 'circle', color: 'red' }, { shape: 'circle', color: 'blue' }] } as Scene).map((x) => x.question);
  t.false(pool.includes('What color is the circle?'));
  t.true(pool.includes('What shape is the red one?'));
});

test('text-only sums and disjoint train/eval images', (t) => {
  const text = rows(a.trainText);
  t.is(text.length, 100);
  for (const r of text) {
    const m = /\nHuman: What is (\d) plus (\d)\?\nAI: (\d+)\.$/.exec(r.text)!;
    t.truthy(m);
    t.is(Number(m[3]), Number(m[1]) + Number(m[2]));
    t.is(r.image, undefined);
  }
  const trainImgs = new Set(rows(a.trainCaptions).map((r) => r.image));
  const evalImgs = rows(a.evalCaptions).map((r) => r.image);
  t.true(evalImgs.every((p) => !trainImgs.has(p) && p.startsWith('images/eval/')));
  const trainHashes = new Set([...trainImgs].map((p) => sha(join(a.out, p))));
  t.true(evalImgs.every((p) => !trainHashes.has(sha(join(a.out, p)))));
  for (const r of rows(a.evalInstructions)) t.true(r.image[0].startsWith('images/eval/'));
});

test('layout: the same seed gives the same scenes at any size and layout; centred shapes with jitter 0; bad layouts refused', async (t) => {
  const r = (k: number) => rng(11, k);
  for (let k = 0; k < 20; k++) {
    const big = sampleScene(r(k), 224), small = sampleScene(r(k), 96, { size: [0.55, 0.85], jitter: 0 });
    t.is(caption(small), caption(big));
    const cell = 96 / 3;
    for (const s of small.shapes) {
      t.true(Math.abs(s.cx - (s.col + 0.5) * cell) < 1e-9 && Math.abs(s.cy - (s.row + 0.5) * cell) < 1e-9);
      t.true(s.size >= 0.55 * cell - 1e-9 && s.size <= 0.85 * cell + 1e-9);
    }
  }
  await t.throwsAsync(generateDemoData({ out: join(root, 'bad'), trainImages: 1, evalImages: 1, layout: { size: [0.9, 0.5], jitter: 0 } }), { message: /layout/ });
  await t.throwsAsync(generateDemoData({ out: join(root, 'bad'), trainImages: 1, evalImages: 1, layout: { size: [0.5, 0.6], jitter: 2 } }), { message: /layout/ });
});

test('grid text: two words (or one code) per cell in reading order, as many LLaMA tokens as the image has tokens', (t) => {
  const scene = { shapes: [{ shape: 'circle', color: 'red', row: 0, col: 1 }, { shape: 'triangle', color: 'yellow', row: 2, col: 2 }] } as Scene;
  t.is(gridText(scene), 'empty cell red circle empty cell empty cell empty cell empty cell empty cell empty cell yellow triangle.');
  t.is(gridText(scene, 'codes'), 'x A x x x x x x L.');
  // Every colour and shape has its own code, none of them the empty cell's.
  const codes = COLORS.flatMap((c) => SHAPES.map((s) => gridCode(c, s)));
  t.is(new Set([...codes, 'x']).size, COLORS.length * SHAPES.length + 1);
  const tok = llamaTokenizer();
  for (const s of rows(a.trainScenes) as Scene[]) {
    t.is(tok.encode(gridText(s)).length, GRID_TOKENS.words);
    t.is(tok.encode(gridText(s, 'codes')).length, GRID_TOKENS.codes);
  }
  t.deepEqual(GRID_TOKENS, { words: 18 + 1, codes: 9 + 1 });
});

for (const style of GRID_STYLES) {
  test(`warm-up corpora (${style}): the grid text sits exactly where the image tokens of stage 1 and stage 2 samples go`, async (t) => {
    const system = 'A chat between a human and an AI.';
    const w = await generateDemoData({ out: join(root, `w-${style}`), trainImages: 3, evalImages: 1, maxTurns: 2, system, warmupScenes: 40, imageSize: 96, gridStyle: style });
    const tok = llamaTokenizer(), M = GRID_TOKENS[style], seq = { maxLength: 90, mediaTokenLength: M };
    const ins = rows(w.warmupInstructions!), caps = rows(w.warmupCaptions!);
    t.is(ins.length, 40);
    t.is(caps.length, 40);
    // The same text with the grid put back to <image> tokenises to the same ids outside the image's positions.
    const grid = style === 'codes' ? /(?:[A-Lx] ){8}[A-Lx]\./ : /(?:(?:empty cell|\w+ \w+) ){8}(?:empty cell|\w+ \w+)\./;
    for (const [row, asImage] of [...ins.map((r) => [r, (x: string) => tokenizeConversation(x, tok, seq)] as const),
      ...caps.map((r) => [r, (x: string) => tokenizeCaption(x, tok, { ...seq, captionPrompt: captionPrompt(system) })] as const)]) {
      const text: string = row.text;
      const g = grid.exec(text)![0];
      const withGrid = tokenizeConversation(text, tok, seq);
      const image = text.includes('What is in the image?\nAI: ') && caps.includes(row)
        ? asImage(text.slice(text.lastIndexOf('AI: ') + 4)) : asImage(text.replace(g, IMAGE_TOKEN));
      t.is(withGrid.seqLength, image.seqLength);
      const at = Array.from(image.inputIds).indexOf(-1);
      t.deepEqual(Array.from(withGrid.inputIds.slice(at, at + M)), tok.encode(g));
      t.deepEqual([...withGrid.inputIds.slice(0, at), ...withGrid.inputIds.slice(at + M)], [...image.inputIds.slice(0, at), ...image.inputIds.slice(at + M)]);
      t.deepEqual(Array.from(withGrid.promptMask), Array.from(image.promptMask));
    }
  });
}

test('grid style: an unknown one is refused', async (t) => {
  await t.throwsAsync(generateDemoData({ out: join(root, 'bad-style'), trainImages: 1, evalImages: 1, gridStyle: 'pixels' as GridStyle }), { message: /gridStyle/ });
});

test('near-miss negatives: with the option every "no" names a shape or colour the scene has, where one exists', (t) => {
  let nearNo = 0, plainNo = 0, plainNear = 0;
  for (let i = 0; i < 400; i++) {
    const scene = sampleScene(rng(7, 4, i), 96);
    const possible = questionPool(scene).some((q) => nearMiss(scene, q));
    for (const [near, r] of [[true, rng(8, 1, i)], [false, rng(8, 1, i)]] as const) {
      for (const q of sampleTurns(scene, r, 3, near)) {
        if (q.answer !== 'no.') continue;
        if (near) { t.is(nearMiss(scene, q), possible, q.question); nearNo++; }
        else { plainNo++; if (nearMiss(scene, q)) plainNear++; }
      }
    }
  }
  t.true(nearNo > 50 && plainNo > 50);
  t.true(plainNear < plainNo, 'without the option some negatives name neither the shape nor the colour');
  // The definition itself: a red square beside a green square is a near miss; a red square in a scene of blue circles is not.
  const scene = { shapes: [{ shape: 'square', color: 'green' }] } as unknown as Scene;
  t.true(nearMiss(scene, { question: 'Is there a red square?', answer: 'no.' }));
  t.false(nearMiss(scene, { question: 'Is there a red circle?', answer: 'no.' }));
  t.false(nearMiss(scene, { question: 'Is there a green square?', answer: 'yes.' }));
});

test('warm-up turns: warmupMaxTurns sets the turns of the warm-up conversations only; the image splits keep maxTurns', async (t) => {
  const base = { trainImages: 30, evalImages: 10, maxTurns: 2, warmupScenes: 60, imageSize: 48 };
  const w = await generateDemoData({ ...base, out: join(root, 'wt'), warmupMaxTurns: 4 });
  const turns = (p: string) => rows(p).map((r) => (r.text as string).split('\nAI: ').length - 1);
  const warm = turns(w.warmupInstructions!), train = turns(w.trainInstructions), ev = turns(w.evalInstructions);
  t.true(warm.every((n) => n >= 1 && n <= 4));
  t.true(warm.some((n) => n > 2), 'some warm-up conversations have more than maxTurns turns');
  t.true([...train, ...ev].every((n) => n >= 1 && n <= 2));
  // The image splits are the ones maxTurns alone would give.
  const plain = await generateDemoData({ ...base, out: join(root, 'wt0') });
  t.is(sha(w.trainInstructions), sha(plain.trainInstructions));
  t.is(sha(w.evalInstructions), sha(plain.evalInstructions));
  await t.throwsAsync(generateDemoData({ ...base, out: join(root, 'wt1'), warmupMaxTurns: 1.5 }), { message: /warmupMaxTurns/ });
});
