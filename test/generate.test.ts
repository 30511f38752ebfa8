// Generation against the model itself: KV-cache decoding must give what a full forward over the whole sequence gives
// at every step, and left-padded batches of prompts of different lengths what each prompt gives alone (generate.ts's
// claim that shifting a sample's RoPE positions by its pad count leaves its scores unchanged).
import test from 'ava';
import { AI_MARKER, formatConversation, llamaTokenizer, tokenizeConversation } from '../lib/data/index.ts';
import { generateIds } from '../lib/generate/index.ts';
import { promptIds } from '../lib/generate/prompt.ts';
import { byLogitDescending, pickToken } from '../lib/generate/sample.ts';
import { rng } from './helpers/rng.ts';
import { mediaTokenLength } from '../lib/model/config.ts';
import { llamaHidden, lmHead } from '../lib/model/llama.ts';
import type { OwlBatch } from '../lib/model/batch.ts';
import type { MplugOwl } from '../lib/model/owl.ts';
import { noGrad, reshape, scope, slice, tensor, type Tensor } from '../lib/tensor/index.ts';
import { tinyOwl } from './helpers/tiny-owl.ts';

const tok = llamaTokenizer();
// (more layers than tinyOwl's one would be better still; one already runs the cache through every path: the prompt's
// pass stores it, each new token appends to it and attends over it)
const model = tinyOwl({ seed: 11 });

function image(seed: number): Tensor {
  const px = new Float32Array(3 * 28 * 28);
  let s = seed;
  for (let i = 0; i < px.length; i++) { s = (s * 1103515245 + 12345) >>> 0; px[i] = (s >>> 8) / (1 << 24) * 2 - 1; }
  return tensor(px, [3, 28, 28]);
}

/** The next-token logits of a full forward (no cache) over the prompt followed by `extra` ids. */
function fullForwardLogits(m: MplugOwl, prompt: string, images: Tensor[], extra: number[]): Float32Array {
  const ids = Int32Array.from([...promptIds(tok, prompt, mediaTokenLength(m.config)), ...extra]);
  const T = ids.length;
  return noGrad(() => scope(() => {
    const ctx = m.context(false);
    const batch: OwlBatch = {
      inputIds: ids, batchSize: 1, seqLen: T, numImages: Int32Array.of(images.length),
      nonPaddingMask: new Float32Array(0), nonMediaMask: new Float32Array(0), promptMask: new Float32Array(0),
      pixelValues: images.length ? reshape(images[0], [1, 3, 28, 28]) : null,
    };
    const { x } = m.embed(ctx, batch, T, 0);
    const h = llamaHidden(ctx, m.config.text, x, {});
    return lmHead(ctx, slice(h, 1, T - 1, 1)).toFloat32();
  }));
}

const argmax = (xs: Float32Array) => xs.reduce((best, v, i) => (v > xs[best] ? i : best), 0);

test('KV-cache decoding gives, at every step, the logits of a full forward over the whole sequence', (t) => {
  const img = image(3);
  const prompt = 'The following is a conversation.\nHuman: <image>\nHuman: What is in the picture?\nAI: ';
  const steps: Float32Array[] = [];
  const got = generateIds(model, tok, [{ prompt, images: [img] }],
    { greedy: true, maxNewTokens: 10, onLogits: (_, rows) => steps.push(Float32Array.from(rows[0])) })[0];
  t.true(got.length >= 3, `generated ${got.length} tokens`);
  // (the two paths add in different orders: measured 4e-8 apart; a RoPE position off by one moves them 1e-4)
  for (let s = 0; s < got.length; s++) {
    const ref = fullForwardLogits(model, prompt, [img], got.slice(0, s));
    const err = steps[s].reduce((m, v, i) => Math.max(m, Math.abs(v - ref[i])), 0);
    t.true(err < 1e-6, `step ${s}: logits differ by ${err.toExponential(2)}`);
    t.is(got[s], argmax(steps[s]), `step ${s}: greedy picks the largest logit`);
  }
});

test('a left-padded batch of prompts of different lengths generates what each prompt generates alone', (t) => {
  const a = { prompt: 'Human: <image>\nHuman: Describe it.\nAI: ', images: [image(5)] };
  const b = { prompt: 'The following is a long conversation between a curious human and an assistant.\nHuman: <image>\nHuman: What colour is the thing on the left, and why?\nAI: ', images: [image(9)] };
  const c = { prompt: 'Human: Say something.\nAI: ' }; // text only, in the same batch as images
  const o = { greedy: true, maxNewTokens: 8 };
  const aloneLogits: Float32Array[][] = [[], [], []], togetherLogits: Float32Array[][] = [[], [], []];
  const alone = [a, b, c].map((r, i) =>
    generateIds(model, tok, [r], { ...o, onLogits: (_, rows) => aloneLogits[i].push(Float32Array.from(rows[0])) })[0]);
  const together = generateIds(model, tok, [a, b, c],
    { ...o, onLogits: (_, rows) => rows.forEach((row, i) => togetherLogits[i].push(Float32Array.from(row))) });
  t.deepEqual(together, alone);
  // (padding shifts a sample's RoPE angles, which round differently in fp32: measured 6e-8 apart, not equal)
  for (let i = 0; i < 3; i++) {
    for (let s = 0; s < alone[i].length; s++) {
      const err = aloneLogits[i][s].reduce((m, v, j) => Math.max(m, Math.abs(v - togetherLogits[i][s][j])), 0);
      t.true(err < 1e-6, `prompt ${i} step ${s}: logits differ by ${err.toExponential(2)}`);
    }
  }
  t.true(alone.every((ids) => ids.length > 0));
});

// A generation prompt (training chunking, the default) is the start of what the model saw in training for the same
// dialogue: earlier answers end with EOS — an empty one too — and the prompt stops after the last "AI: ".
test("a prompt's ids are a prefix of the training ids of the dialogue it starts, empty earlier answers included", (t) => {
  const M = mediaTokenLength(model.config);
  for (const images of [0, 1]) {
    for (const turns of [[{ human: 'Hi', ai: '' }, { human: 'Add 2 and 3.', ai: '5.' }],
      [{ human: 'Name a colour.', ai: 'Red.' }, { human: 'Another?', ai: 'Blue.' }]]) {
      const text = formatConversation({ images, turns });
      const prompt = text.slice(0, text.lastIndexOf(AI_MARKER) + AI_MARKER.length);
      const trained = tokenizeConversation(text, tok, { maxLength: 512, mediaTokenLength: M });
      const ids = promptIds(tok, prompt, M);
      t.deepEqual(Array.from(trained.inputIds.subarray(0, ids.length)), ids, `${images} image(s): ${JSON.stringify(turns)}`);
    }
  }
});

// Sampling orders the 32000 logits by a typed-array sort of float64 keys instead of a comparator sort (43 → ~5 ms a
// token): the order, and so every sampled token, must be the comparator's — ties in id order, -0 equal to 0,
// infinities, denormals, a row that is a view into a larger buffer.
test('sampling orders the logits as the comparator sort did, and picks the same tokens', (t) => {
  const r = rng(11);
  const special = [0, -0, Infinity, -Infinity, 1e-45, -1e-45, 3.4e38, -3.4e38, 1, 1, -1, -1];
  const whole = new Float32Array(1 + 32000);
  for (let i = 0; i < whole.length; i++) {
    whole[i] = i % 7 === 0 ? special[Math.floor(r() * special.length)] : Math.round((r() * 40 - 20) * 4) / 4; // many ties
  }
  const logits = whole.subarray(1);
  const comparator = Array.from({ length: logits.length }, (_, i) => i).sort((a, b) => logits[b] - logits[a]);
  t.deepEqual(byLogitDescending(logits), comparator);
  const finite = logits.map((x) => (Number.isFinite(x) ? x : 0));
  const oldPick = (row: Float32Array, T: number, topK: number, topP: number, u: number) => {
    let idx = Array.from({ length: row.length }, (_, i) => i).sort((a, b) => row[b] - row[a]);
    if (topK > 0 && topK < row.length) idx = idx.slice(0, topK);
    let probs = idx.map((i) => Math.exp((row[i] - row[idx[0]]) / T));
    let sum = probs.reduce((a, b) => a + b, 0);
    probs = probs.map((p) => p / sum);
    if (topP < 1) {
      let acc = 0, keep = 0;
      while (keep < probs.length) { acc += probs[keep]; keep++; if (acc >= topP) break; }
      idx = idx.slice(0, keep); probs = probs.slice(0, keep);
      sum = probs.reduce((a, b) => a + b, 0);
      probs = probs.map((p) => p / sum);
    }
    let i = 0;
    for (; i < probs.length - 1; i++) { u -= probs[i]; if (u < 0) break; }
    return idx[i];
  };
  for (const [T, topK, topP] of [[1, 0, 1], [0.7, 0, 0.9], [30, 50, 1], [100, 0, 0.5]] as const) {
    for (const u of [0, 0.05, 0.5, 0.999]) {
      t.is(pickToken(finite, { temperature: T, topK, topP }, () => u), oldPick(finite, T, topK, topP, u), `T ${T} k ${topK} p ${topP} u ${u}`);
    }
  }
});
