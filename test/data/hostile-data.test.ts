// Hostile inputs to the data pipeline (robustness audit): errors that are not about one sample (a broken tokenizer, a
// data worker that dies) must reach the caller as one catchable error, never as an unhandled rejection that ends the
// process, and a stream that failed must not read as "the data ended".
import test from 'ava';
import sharp from 'sharp';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { crc32, deflateSync } from 'node:zlib';
import { JsonlDataset } from '../../lib/data/dataset.ts';
import { DataLoader, type LoaderOptions } from '../../lib/data/loader.ts';
import { PreparePool } from '../../lib/data/prepare-pool.ts';
import { llamaTokenizer, loadTokenizerModel, type Tokenizer } from '../../lib/data/tokenizer.ts';
import { llamaModelProto } from '../../lib/data/llama-vocab.ts';
import { parseModelProto, writeModelProto } from '../../lib/data/sentencepiece-proto.ts';
import { captionPrompt, formatConversation } from '../../lib/data/template.ts';
import { MAX_IMAGE_PIXELS, preprocessImage } from '../../lib/data/image.ts';
import { DataFormatError, ImageError } from '../../lib/data/errors.ts';
import { formatLintReport, lintData } from '../../lib/data/lint.ts';

const dir = mkdtempSync(join(tmpdir(), 'owlet-hostile-data-'));
test.after.always(() => rmSync(dir, { recursive: true, force: true }));

const data = join(dir, 'inst.jsonl');
test.before(async () => {
  mkdirSync(join(dir, 'img'));
  await sharp({ create: { width: 12, height: 10, channels: 3, background: '#c00' } }).png().toFile(join(dir, 'img', 'a.png'));
  const rows = Array.from({ length: 6 }, (_, i) => ({ text: formatConversation({ images: 1, turns: [{ human: `q${i}?`, ai: `a${i}.` }] }), image: ['img/a.png'] }));
  writeFileSync(data, rows.map((r) => JSON.stringify(r)).join('\n') + '\n');
});

const base = (o: Partial<LoaderOptions> = {}): LoaderOptions =>
  ({ batchSize: 2, prefetch: 2, maxLength: 48, mediaTokenLength: 3, resolution: 8, mode: 'train', seed: 1, ...o });

/** A tokenizer whose encode throws a plain Error: a bug, not a bad sample. */
function brokenTokenizer(): Tokenizer {
  const tok = llamaTokenizer();
  return { ...tok, source: 'test', vocabSize: tok.vocabSize, bos: tok.bos, eos: tok.eos, pad: tok.pad, unk: tok.unk,
    idToPiece: (id) => tok.idToPiece(id), decode: (ids) => tok.decode(ids), encode: () => { throw new Error('encoder bug'); } };
}

/** Rejections nobody handled while `f` ran (and a little after: they are reported on a later tick). */
async function unhandledDuring(f: () => Promise<void>): Promise<unknown[]> {
  const seen: unknown[] = [];
  const on = (e: unknown): void => { seen.push(e); };
  process.on('unhandledRejection', on);
  try {
    await f();
    await new Promise((r) => setTimeout(r, 50));
  } finally {
    process.off('unhandledRejection', on);
  }
  return seen;
}

// Before: every prefetched sample failed with the same error; the first reached next()'s caller, the other three were
// rejected promises awaited by no one, and node ended the process on them (in a training run: no clean shutdown).
test('a non-data error in prefetched samples is thrown once by next(), with no unhandled rejection', async (t) => {
  const loader = new DataLoader(JsonlDataset.load([data]), base({ tokenizer: brokenTokenizer() }));
  const stray = await unhandledDuring(async () => {
    await t.throwsAsync(loader.next(), { message: 'encoder bug' });
  });
  t.deepEqual(stray.map((e) => (e as Error).message), []);
  // ... and the stream stays failed: a second next() must not answer null ("no more data")
  await t.throwsAsync(loader.next(), { message: 'encoder bug' });
  t.is(loader.stats.skipped, 0, 'a bug is not counted as a corrupt sample');
});

// Before: the stop's error was thrown once, and the next call found an empty, closed pipeline and returned null.
test("onError 'stop': a later next() throws the same error instead of reporting the end of the data", async (t) => {
  writeFileSync(join(dir, 'img', 'broken.png'), 'not an image');
  const p = join(dir, 'broken.jsonl');
  writeFileSync(p, JSON.stringify({ text: formatConversation({ images: 1, turns: [{ human: 'q', ai: 'a' }] }), image: ['img/broken.png'] }) + '\n');
  const loader = new DataLoader(JsonlDataset.load([p]), base({ onError: 'stop', mode: 'eval', batchSize: 1 }));
  await t.throwsAsync(loader.next(), { message: /broken\.png/ });
  await t.throwsAsync(loader.next(), { message: /broken\.png/ });
});

// Before: a worker that failed to start rejected what it held through the same unhandled path; a worker that was gone
// took later requests and never answered them (the loader hung).
test('a data worker that dies is a clear error from next(), not a crash or a hang', async (t) => {
  const notTokenizer = join(dir, 'img', 'a.png'); // exists, so the pool starts, but the worker cannot load it
  const loader = new DataLoader(JsonlDataset.load([data]), base({ workers: 1, tokenizer: { ...llamaTokenizer(), source: notTokenizer } }));
  try {
    const stray = await unhandledDuring(async () => {
      await t.throwsAsync(loader.next(), { message: /data worker .*expected a tokenizer\.json or tokenizer\.model/ });
    });
    t.deepEqual(stray.map((e) => (e as Error).message), []);
    await t.throwsAsync(loader.next(), { message: /data worker/ });
  } finally {
    loader.close();
  }
});

test('the worker pool refuses work once its workers are gone, instead of leaving the request unanswered', async (t) => {
  const pool = new PreparePool(1, { ...base(), tokenizer: { ...llamaTokenizer(), source: join(dir, 'img', 'a.png') } });
  try {
    const rec = JsonlDataset.load([data]).record(0);
    await t.throwsAsync(pool.run(rec, [0]), { message: /data worker/ });
    const timeout = new Promise<'hung'>((r) => setTimeout(() => r('hung'), 5000).unref());
    const later = await Promise.race([pool.run(rec, [1]).then(() => 'ok', (e: Error) => e.message), timeout]);
    t.regex(String(later), /data worker/);
  } finally {
    pool.close();
  }
});

/** A PNG whose header declares width×height, with only a few rows of pixel data behind it (a ~1 kB file). */
function declaredPng(width: number, height: number): Buffer {
  const chunk = (type: string, body: Buffer): Buffer => {
    const len = Buffer.alloc(4), crc = Buffer.alloc(4), typed = Buffer.concat([Buffer.from(type, 'latin1'), body]);
    len.writeUInt32BE(body.length);
    crc.writeUInt32BE(crc32(typed) >>> 0);
    return Buffer.concat([len, typed, crc]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 2; // RGB
  return Buffer.concat([Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]), chunk('IHDR', ihdr),
    chunk('IDAT', deflateSync(Buffer.alloc(4 * (1 + width * 3)))), chunk('IEND', Buffer.alloc(0))]);
}

// PIL refuses images over 2 × MAX_IMAGE_PIXELS (DecompressionBombError; the official loader skips the sample); sharp's
// default limit is 16383², so a small file declaring 14000×13000 (182 M pixels) was decoded (675 MB for a whole one).
test('an image over PIL\'s decompression-bomb limit is refused from its header, naming its size', async (t) => {
  const p = join(dir, 'img', 'bomb.png');
  writeFileSync(p, declaredPng(14000, 13000));
  await t.throwsAsync(preprocessImage(p, { resolution: 8, mode: 'eval' }),
    { instanceOf: ImageError, message: `image ${p}: too large (14000×13000 = 182,000,000 pixels, more than 178,956,970: a decompression bomb to PIL, which the official loader skips)` });
  t.is(MAX_IMAGE_PIXELS, 178_956_970);
  const rows = join(dir, 'bomb.jsonl');
  writeFileSync(rows, JSON.stringify({ image: 'img/bomb.png', text: 'a caption' }) + '\n');
  for (const images of ['header', 'decode'] as const) {
    const r = await lintData([rows], { maxLength: 32, mediaTokenLength: 3, images });
    t.is(r.counts['unreadable-image'], 1, images);
    t.regex(r.issues[0].message, /bomb\.png: too large \(14000×13000/, images);
  }
});

// LLaVA-style data.json (one JSON array) given as a data file: every line was skipped as malformed ("invalid JSON" or
// "expected a JSON object") and the run stopped on "the data files hold no samples", never saying the file was an array.
test('a JSON array file is refused as such, with the way to convert it', (t) => {
  const row = { text: formatConversation({ turns: [{ human: 'hi', ai: 'yo' }] }) };
  for (const [name, body] of [['compact.json', JSON.stringify([row, row])], ['pretty.json', `\uFEFF${JSON.stringify([row], null, 2)}`]]) {
    const p = join(dir, name);
    writeFileSync(p, body);
    t.throws(() => JsonlDataset.load([p]), { instanceOf: DataFormatError, message: new RegExp(`^${p}: holds a JSON array, not JSON Lines .*jq -c '\\.\\[\\]'`) }, name);
  }
  // JSON Lines with a BOM and CRLF line ends still read (editors on Windows write both)
  const p = join(dir, 'crlf.jsonl');
  writeFileSync(p, `\uFEFF${JSON.stringify(row)}\r\n${JSON.stringify(row)}\r\n`);
  t.is(JsonlDataset.load([p]).size, 2);
});

test('loader options: epochs and seed that are not whole numbers are refused', (t) => {
  const ds = JsonlDataset.load([data]);
  for (const epochs of [NaN, -1, 1.5]) {
    t.throws(() => new DataLoader(ds, base({ epochs })), { instanceOf: DataFormatError, message: /epochs must be a whole number/ }, String(epochs));
  }
  for (const seed of [NaN, 1.5, Infinity]) {
    t.throws(() => new DataLoader(ds, base({ seed })), { instanceOf: DataFormatError, message: /seed must be a whole number/ }, String(seed));
  }
  t.notThrows(() => { new DataLoader(ds, base({ epochs: Infinity })).close(); new DataLoader(ds, base({ epochs: 0 })).close(); });
});

// "<image><image>" in training data: one run of media ids, so the official splice (and owlet's, which follows it) reads
// one image there; the second is encoded and never seen. Legal, so a warning — lint said nothing of it.
test('lint warns about <image> placeholders with no text between them', async (t) => {
  const p = join(dir, 'merged.jsonl');
  writeFileSync(p, [
    { text: 'Sys\nHuman: <image><image>\nHuman: Compare.\nAI: same.', image: ['img/a.png', 'img/a.png'] },
    { text: 'Sys\nHuman: <image>\nHuman: <image>\nHuman: Compare.\nAI: same.', image: ['img/a.png', 'img/a.png'] },
  ].map((r) => JSON.stringify(r)).join('\n'));
  const r = await lintData([p], { maxLength: 64, mediaTokenLength: 3, images: 'none' });
  t.is(r.counts['merged-images'], 1);
  t.is(r.issues[0].message, `${p}:1: 2 <image> placeholders form 1 image run(s): with no text between them they merge, and the model sees only the first image of each run`);
  t.true(r.ok, 'a warning, not an error');
  t.regex(formatLintReport(r), /warning: 1 samples with <image> placeholders merged into one image/);
});

// TextDecoder drops a leading byte-order mark unless told not to: the tokenizer.model parser read LLaMA's piece 30143
// (exactly U+FEFF) as "", so from a tokenizer.model a BOM in a text became three byte pieces (<0xEF> <0xBB> <0xBF>),
// not 30143 as SentencePiece, tokenizer.json and llama-tokenizer-js encode it.
test('a byte-order mark in a text is the same token from every tokenizer source', (t) => {
  const f = join(dir, 'tokenizer.model');
  writeFileSync(f, writeModelProto(llamaModelProto()));
  const fromModel = loadTokenizerModel(f), js = llamaTokenizer();
  t.is(parseModelProto(writeModelProto(llamaModelProto())).pieces[30143].piece, '\uFEFF');
  for (const text of ['\uFEFFbom', 'a\uFEFF b', '\uFEFF']) {
    t.deepEqual(fromModel.encode(text), js.encode(text), JSON.stringify(text));
    t.is(fromModel.decode(fromModel.encode(text)), text, JSON.stringify(text));
  }
  t.deepEqual(js.encode('\uFEFFbom'), [29871, 30143, 29890, 290]);
});

// With data.caption_prompt (the demo's stage 1), a caption holding "<image>" became a sample with two image runs and one
// image: the loader passed it and the training step died on it at the model's splice, instead of the sample being skipped.
test('a caption holding "<image>" under a caption prompt is a skipped sample, not a crashed step', async (t) => {
  const p = join(dir, 'caps.jsonl');
  writeFileSync(p, [{ image: 'img/a.png', caption: 'a red <image> square' }, { image: 'img/a.png', caption: 'a red square' }]
    .map((r) => JSON.stringify(r)).join('\n'));
  const loader = new DataLoader(JsonlDataset.load([p]), base({ mode: 'eval', batchSize: 2, captionPrompt: captionPrompt() }));
  const b = (await loader.next())!;
  t.deepEqual(b.sampleIds, [`${p}:2`]);
  t.is(loader.stats.skipped, 1);
  t.deepEqual(loader.stats.problems, [{ id: `${p}:1`, message: 'the caption holds "<image>", which after the caption prompt would be a second image placeholder for its one image' }]);
  // without a caption prompt the caption is plain text and the sample is fine
  const plain = new DataLoader(JsonlDataset.load([p]), base({ mode: 'eval', batchSize: 2 }));
  t.is((await plain.next())!.batchSize, 2);
});
