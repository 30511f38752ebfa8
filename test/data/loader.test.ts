// Datasets and the loader: formats, mixing, determinism, sharding, exact resume, skip-and-count, batch layout.
import test from 'ava';
import sharp from 'sharp';
import { mkdtempSync, rmSync, writeFileSync, readFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { JsonlDataset, readJsonl, type DataProblem } from '../../lib/data/dataset.ts';
import { DataLoader, globalStreamPosition, rebasedPosition, type LoaderOptions, type LoaderPosition } from '../../lib/data/loader.ts';
import { batchFromRecord, batchToRecord, lossTargets, toTensors, type Batch } from '../../lib/data/batch.ts';
import { formatConversation } from '../../lib/data/template.ts';
import { DataFormatError, ImageError } from '../../lib/data/errors.ts';
import { scope } from '../../lib/tensor/index.ts';

const dir = mkdtempSync(join(tmpdir(), 'owlet-loader-'));
test.after.always(() => rmSync(dir, { recursive: true, force: true }));

const jsonl = (name: string, rows: unknown[]): string => {
  const p = join(dir, name);
  writeFileSync(p, rows.map((r) => (typeof r === 'string' ? r : JSON.stringify(r))).join('\n') + '\n');
  return p;
};

test.before(async () => {
  mkdirSync(join(dir, 'img'));
  for (let i = 0; i < 6; i++) {
    const data = Buffer.alloc(12 * 10 * 3, 40 * i);
    await sharp(data, { raw: { width: 12, height: 10, channels: 3 } }).png().toFile(join(dir, 'img', `${i}.png`));
  }
  const convo = (q: string, a: string, images = 1) => formatConversation({ images, turns: [{ human: q, ai: a }] });
  jsonl('inst.jsonl', Array.from({ length: 7 }, (_, i) => ({ text: convo(`question ${i}?`, `answer ${i}.`), image: [`img/${i % 6}.png`], task_type: 'llava_sft' })));
  jsonl('text.jsonl', Array.from({ length: 5 }, (_, i) => ({ text: convo(`What is ${i} plus 1?`, `${i + 1}.`, 0), task_type: 'gpt4instruct_sft' })));
  jsonl('caps.jsonl', [{ image: 'img/0.png', text: 'a gray square.' }, { image: 'img/1.png', caption: 'another one.' }]);
});

const base = (o: Partial<LoaderOptions> = {}): LoaderOptions =>
  ({ batchSize: 3, maxLength: 64, mediaTokenLength: 5, resolution: 8, mode: 'train', seed: 11, ...o });

async function drain(l: DataLoader, maxBatches = Infinity): Promise<Batch[]> {
  const out: Batch[] = [];
  for (let b; out.length < maxBatches && (b = await l.next());) out.push(b);
  return out;
}
const ids = (bs: Batch[]) => bs.flatMap((b) => b.sampleIds);

test('records: instruction and caption formats, relative image paths, malformed lines skipped or fatal', (t) => {
  const inst = readJsonl(join(dir, 'inst.jsonl'));
  t.is(inst.length, 7);
  t.is(inst[0].kind, 'instruction');
  t.deepEqual(inst[0].images, [join(dir, 'img', '0.png')]);
  t.is(inst[0].taskType, 'llava_sft');
  t.is(inst[2].id, `${join(dir, 'inst.jsonl')}:3`);
  const caps = readJsonl(join(dir, 'caps.jsonl'));
  t.deepEqual(caps.map((c) => [c.kind, c.text]), [['caption', 'a gray square.'], ['caption', 'another one.']]);
  // A conversation with its one image given as a plain string is an instruction record (the official loader takes
  // a string too); it was read as a caption: every token of the conversation, question included, a target.
  const chat = (images: number) => formatConversation({ images, turns: [{ human: 'What is it?', ai: 'A square.' }] });
  const one = jsonl('one-image-string.jsonl', [{ text: chat(1), image: 'img/2.png' }, { text: chat(0), image: 'img/2.png' },
    { image: 'img/3.png', text: 'AI art of a cat.' }]);
  t.deepEqual(readJsonl(one).map((r) => [r.kind, r.images.length]), [['instruction', 1], ['instruction', 1], ['caption', 1]]);
  const bad = jsonl('bad.jsonl', [{ text: 'ok' }, '{"text": ', { image: 5, text: 'x' }, '', { nope: 1 }, { text: 'fine' }]);
  const problems: DataProblem[] = [];
  t.is(readJsonl(bad, {}, problems).length, 2);
  t.deepEqual(problems.map((p) => p.id.split(':').pop()), ['2', '3', '5']);
  t.regex(problems[0].message, /bad\.jsonl:2: invalid JSON/);
  t.throws(() => readJsonl(bad, { onError: 'stop' }), { instanceOf: DataFormatError, message: /bad\.jsonl:2/ });
  t.throws(() => readJsonl(join(dir, 'missing.jsonl')), { instanceOf: DataFormatError, message: /missing\.jsonl/ });
});

test('mixing: weights set samples per epoch; text-only and multimodal share one stream', (t) => {
  const ds = JsonlDataset.load([{ path: join(dir, 'inst.jsonl'), weight: 1.5 }, { path: join(dir, 'text.jsonl'), weight: 0.4 }, join(dir, 'caps.jsonl')]);
  t.is(ds.size, 14);
  t.is(ds.epochLength, 11 + 2 + 2);
  const count = (order: Uint32Array, from: number, to: number) => [...order].filter((i) => i >= from && i < to).length;
  const e0 = ds.epochOrder(0, 1, true), e1 = ds.epochOrder(1, 1, true);
  t.is(count(e0, 0, 7), 11);
  t.is(count(e0, 7, 12), 2);
  t.not([...e0].join(), [...e1].join());
  t.deepEqual([...ds.epochOrder(0, 1, true)], [...e0]); // cached and deterministic
  t.deepEqual([...ds.epochOrder(0, 1, false)].slice(0, 9), [0, 1, 2, 3, 4, 5, 6, 0, 1, 2, 3].slice(0, 9));
});

test('loader: deterministic per seed, sharded ranks concatenate to the unsharded order', async (t) => {
  const files = [join(dir, 'inst.jsonl'), join(dir, 'text.jsonl')];
  const ds = JsonlDataset.load(files);
  const one = ids(await drain(new DataLoader(ds, base({ epochs: 1 }))));
  t.is(one.length, 12);
  t.deepEqual(ids(await drain(new DataLoader(JsonlDataset.load(files), base({ epochs: 1 })))), one);
  t.notDeepEqual(ids(await drain(new DataLoader(ds, base({ epochs: 1, seed: 12 })))), one);
  // 12 samples on 5 ranks: padded to 15 with the first 3, blocks of 3.
  const shards: string[][] = [];
  for (let r = 0; r < 5; r++) shards.push(ids(await drain(new DataLoader(ds, base({ epochs: 1, rank: r, worldSize: 5, batchSize: 2 })))));
  t.true(shards.every((s) => s.length === 3));
  t.deepEqual(shards.flat(), [...one, ...one.slice(0, 3)]);
  t.throws(() => new DataLoader(ds, base({ rank: 5, worldSize: 5 })), { instanceOf: DataFormatError });
});

test('loader: a saved position resumes the identical sequence, across epochs, pixels included', async (t) => {
  const ds = JsonlDataset.load([join(dir, 'inst.jsonl'), join(dir, 'text.jsonl'), join(dir, 'caps.jsonl')]);
  const a = new DataLoader(ds, base({ prefetch: 3 }));
  await drain(a, 3);
  const saved: LoaderPosition = JSON.parse(JSON.stringify(a.position()));
  const rest = await drain(a, 5); // crosses into epoch 1 (14 samples per epoch)
  a.close();
  t.true(rest.at(-1)!.sampleIds.length === 3 && saved.pos === 9);
  const b = new DataLoader(JsonlDataset.load([join(dir, 'inst.jsonl'), join(dir, 'text.jsonl'), join(dir, 'caps.jsonl')]), base({ position: saved, prefetch: 1 }));
  const again = await drain(b, 5);
  b.close();
  t.deepEqual(ids(again), ids(rest));
  for (let i = 0; i < rest.length; i++) {
    t.deepEqual(again[i].inputIds, rest[i].inputIds);
    t.deepEqual(again[i].pixelValues, rest[i].pixelValues);
    t.deepEqual(again[i].promptMask, rest[i].promptMask);
  }
  t.is(b.position().pos, a.position().pos);
  t.throws(() => new DataLoader(ds, base({ position: { ...saved, seed: 99 } })), { instanceOf: DataFormatError, message: /seed/ });
});

test('interleaved training streams: W ranks read the micro-batches one rank reads, across epochs, and remap on resume', async (t) => {
  const files = [join(dir, 'inst.jsonl'), join(dir, 'text.jsonl')]; // 12 samples per epoch
  const ds = JsonlDataset.load(files);
  const one = new DataLoader(ds, base({ batchSize: 2, chunk: 2 }));
  const solo = (await drain(one, 9)).map((b) => b.sampleIds); // 18 samples: into epoch 1
  one.close();
  t.deepEqual(solo.flat().slice(0, 12), ids(await drain(new DataLoader(ds, base({ batchSize: 2, epochs: 1 })))),
    'one rank reads what the block layout reads (old positions stay valid)');
  // 3 ranks: rank r's k-th micro-batch is the solo run's micro-batch 3k + r.
  const loaders = [0, 1, 2].map((rank) => new DataLoader(ds, base({ batchSize: 2, chunk: 2, rank, worldSize: 3 })));
  for (let k = 0; k < 3; k++) {
    for (const [r, l] of loaders.entries()) t.deepEqual((await l.next())!.sampleIds, solo[3 * k + r], `rank ${r} micro ${k}`);
  }
  // Saved there (each rank at pos 6: 18 samples read in all), resumed on 2 ranks: they continue at global sample 18.
  const saved = loaders.map((l) => l.position());
  loaders.forEach((l) => l.close());
  t.deepEqual(saved.map((p) => [p.pos, p.chunk, p.base]), [[6, 2, 0], [6, 2, 0], [6, 2, 0]]);
  t.is(globalStreamPosition(saved), 18);
  const two = [0, 1].map((rank) => new DataLoader(ds, base({ batchSize: 2, chunk: 2, rank, worldSize: 2, position: rebasedPosition(saved, rank, 2, 2) })));
  const solo10 = new DataLoader(ds, base({ batchSize: 2, chunk: 2 }));
  const tenth = (await drain(solo10, 10))[9].sampleIds;
  solo10.close();
  t.deepEqual((await two[0].next())!.sampleIds, tenth, 'the 2-rank run continues with the solo run\'s 10th micro-batch');
  t.deepEqual(two[1].position().base, 18);
  two.forEach((l) => l.close());
  // A rank that skipped samples read into the next round: the resumed run starts after that round.
  t.is(globalStreamPosition([{ ...saved[0], pos: 7 }, saved[1], saved[2]]), 24);
  t.throws(() => globalStreamPosition(saved.slice(0, 2)), { instanceOf: DataFormatError, message: /ranks 0\.\.2 in order/ });
  const blocks = [0, 1].map((rank) => new DataLoader(ds, base({ batchSize: 2, rank, worldSize: 2 })).position());
  t.throws(() => globalStreamPosition(blocks), { instanceOf: DataFormatError, message: /block layout/ });
  t.throws(() => new DataLoader(ds, base({ batchSize: 2, chunk: 3, rank: 1, worldSize: 3, position: saved[1] })), { instanceOf: DataFormatError, message: /chunk/ });
});

test('loader: corrupt or missing images are skipped and counted with the file named, or stop the run', async (t) => {
  writeFileSync(join(dir, 'img', 'broken.png'), 'not an image');
  const p = jsonl('mixed.jsonl', [
    { text: formatConversation({ images: 1, turns: [{ human: 'q', ai: 'a' }] }), image: ['img/0.png'] },
    { text: formatConversation({ images: 1, turns: [{ human: 'q', ai: 'a' }] }), image: ['img/broken.png'] },
    { text: formatConversation({ images: 1, turns: [{ human: 'q', ai: 'a' }] }), image: ['img/gone.png'] },
    { text: formatConversation({ images: 2, turns: [{ human: 'q', ai: 'a' }] }), image: ['img/1.png'] },
    { text: formatConversation({ images: 0, turns: [{ human: 'q', ai: 'a' }] }) },
  ]);
  const l = new DataLoader(JsonlDataset.load([p]), base({ mode: 'eval', batchSize: 2 }));
  const bs = await drain(l);
  t.deepEqual(bs.map((b) => b.sampleIds.map((s) => s.split(':').pop())), [['1', '5']]);
  t.is(l.stats.skipped, 3);
  t.regex(l.stats.problems[0].message, /broken\.png.*cannot decode/);
  t.regex(l.stats.problems[1].message, /gone\.png: file not found/);
  t.regex(l.stats.problems[2].message, /2 <image> placeholders but 1 images/);
  t.is(l.stats.problems[1].id, `${p}:3`);
  const stop = new DataLoader(JsonlDataset.load([p]), base({ mode: 'eval', batchSize: 2, onError: 'stop' }));
  await t.throwsAsync(drain(stop), { instanceOf: ImageError, message: /broken\.png/ });
});

test('batch layout: official shapes, images concatenated in sample order, loss targets, tensors', async (t) => {
  const l = new DataLoader(JsonlDataset.load([join(dir, 'inst.jsonl'), join(dir, 'text.jsonl'), join(dir, 'caps.jsonl')]),
    base({ mode: 'eval', batchSize: 14 }));
  const b = (await l.next())!;
  t.true(l.pending === 0 && (await l.next()) === null);
  t.is(b.batchSize, 14);
  t.is(b.inputIds.length, 14 * 65);
  t.deepEqual([...b.numImages], [1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 1, 1]);
  t.is(b.pixelValues!.length, 9 * 3 * 64);
  // Image 2 of the batch is img/2.png (value 80 everywhere): its red plane is (80/255 - mean)/std.
  t.true(Math.abs(b.pixelValues![2 * 192] - (80 / 255 - 0.48145466) / 0.26862954) < 1e-5);
  const targets = lossTargets(b);
  let counted = 0;
  for (let k = 0; k < targets.length; k++) if (targets[k] !== -100) counted++;
  t.is(counted, b.labelCount);
  // Caption sample (row 12): BOS, 5 media ids, caption tokens, EOS; targets start at the first caption token.
  t.deepEqual([...b.inputIds.subarray(12 * 65, 12 * 65 + 6)], [1, -1, -1, -1, -1, -1]);
  t.is(targets[12 * 64 + 4], -100);
  t.is(targets[12 * 64 + 5], b.inputIds[12 * 65 + 6]);
  scope(() => {
    const ts = toTensors(b);
    t.deepEqual([ts.inputIds.dtype, [...ts.inputIds.shape]], ['i32', [14, 65]]);
    t.deepEqual([ts.promptMask.dtype, [...ts.promptMask.shape]], ['i32', [14, 64]]);
    t.deepEqual([...ts.pixelValues!.shape], [9, 3, 8, 8]);
    t.deepEqual(Array.from(ts.inputIds.data<'i32'>()), Array.from(b.inputIds));
  });
  const rec = batchToRecord(b);
  t.is(rec.input_ids.dtype, 'I64');
  const back = batchFromRecord(rec);
  for (const k of ['inputIds', 'numImages', 'nonPaddingMask', 'nonMediaMask', 'promptMask', 'pixelValues', 'labelCount', 'tokenCount'] as const) {
    t.deepEqual(back[k], b[k], k);
  }
});

/** Minimal safetensors reader for the fixture (the model helper owns the real IO). */
function readSafetensors(path: string) {
  const buf = readFileSync(path);
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8')) as Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
  const out: Record<string, { dtype: string; shape: number[]; data: Float32Array | BigInt64Array }> = {};
  for (const [k, v] of Object.entries(header)) {
    if (k === '__metadata__') continue;
    const bytes = buf.subarray(8 + n + v.data_offsets[0], 8 + n + v.data_offsets[1]);
    const copy = new Uint8Array(bytes).buffer;
    out[k] = { dtype: v.dtype, shape: v.shape, data: v.dtype === 'I64' ? new BigInt64Array(copy) : new Float32Array(copy) };
  }
  return out;
}

test('the fixture batch reads into a Batch that satisfies the mask rules and writes back unchanged', (t) => {
  const fx = readSafetensors('/work/shared/fixtures/owl-tiny/batch.safetensors');
  const b = batchFromRecord(fx);
  t.deepEqual([b.batchSize, b.maxLength, b.resolution], [3, 48, 224]);
  t.deepEqual([...b.numImages], [1, 2, 0]);
  for (let r = 0; r < 3; r++) {
    let runs = 0;
    for (let i = 0; i < 49; i++) {
      const id = b.inputIds[r * 49 + i];
      if (id < 0 && (i === 0 || b.inputIds[r * 49 + i - 1] !== id)) runs++;
      if (i > 0) t.is(b.nonMediaMask[r * 48 + i - 1], id >= 0 ? 1 : 0);
    }
    t.is(runs, b.numImages[r]);
  }
  const rec = batchToRecord(b);
  for (const k of Object.keys(fx)) {
    t.deepEqual(rec[k].shape, fx[k].shape, k);
    t.deepEqual(rec[k].data, fx[k].data, k);
  }
});

test('worker threads prepare the same batches as the main thread, and report bad samples the same way', async (t) => {
  writeFileSync(join(dir, 'img', 'broken2.png'), 'not an image');
  const p = jsonl('workers.jsonl', [
    ...Array.from({ length: 5 }, (_, i) => ({ text: formatConversation({ images: 1, turns: [{ human: `q${i}`, ai: `a${i}` }] }), image: [`img/${i}.png`] })),
    { text: formatConversation({ images: 1, turns: [{ human: 'q', ai: 'a' }] }), image: ['img/broken2.png'] },
  ]);
  const inProcess = new DataLoader(JsonlDataset.load([p]), base({ epochs: 2 }));
  const want = await drain(inProcess);
  const pooled = new DataLoader(JsonlDataset.load([p]), base({ epochs: 2, workers: 2 }));
  try {
    const got = await drain(pooled);
    t.deepEqual(ids(got), ids(want));
    for (let i = 0; i < want.length; i++) {
      t.deepEqual(got[i].inputIds, want[i].inputIds);
      t.deepEqual(got[i].pixelValues, want[i].pixelValues);
    }
    t.is(pooled.stats.skipped, 2);
    t.regex(pooled.stats.problems[0].message, /broken2\.png/);
  } finally {
    pooled.close();
  }
});

// Resume audit (session 10): the fingerprint hashed the paths, record counts and weights, so a file rewritten in
// another order resumed silently with other samples, and the same data moved whole to another folder was refused.
test('a saved position fits the same records wherever they are, and not the same file with its lines reordered', (t) => {
  const moved = mkdtempSync(join(tmpdir(), 'owlet-loader-moved-'));
  try {
    mkdirSync(join(moved, 'img'));
    for (let i = 0; i < 6; i++) writeFileSync(join(moved, 'img', `${i}.png`), readFileSync(join(dir, 'img', `${i}.png`)));
    const lines = readFileSync(join(dir, 'inst.jsonl'), 'utf8').trim().split('\n');
    writeFileSync(join(moved, 'inst.jsonl'), lines.join('\n') + '\n');
    const here = JsonlDataset.load([join(dir, 'inst.jsonl')]), there = JsonlDataset.load([join(moved, 'inst.jsonl')]);
    t.is(there.fingerprint, here.fingerprint, 'moved whole: the same mixture');
    const saved = new DataLoader(here, base()).position();
    t.notThrows(() => new DataLoader(there, base({ position: saved })).close());
    writeFileSync(join(moved, 'inst.jsonl'), [...lines.slice(1), lines[0]].join('\n') + '\n');
    const reordered = JsonlDataset.load([join(moved, 'inst.jsonl')]);
    t.not(reordered.fingerprint, here.fingerprint);
    t.throws(() => new DataLoader(reordered, base({ position: saved })), { instanceOf: DataFormatError, message: /records — their text, images or order —/ });
    t.not(JsonlDataset.load([{ path: join(dir, 'inst.jsonl'), weight: 2 }]).fingerprint, here.fingerprint, 'a weight changes it');
    // positions saved before the content hash (paths, counts, weights) are still accepted for the same files
    t.notThrows(() => new DataLoader(here, base({ position: { ...saved, fingerprint: here.legacyFingerprint } })).close());
  } finally {
    rmSync(moved, { recursive: true, force: true });
  }
});
