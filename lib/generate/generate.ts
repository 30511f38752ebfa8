// KV-cache decoding of spliced multimodal prompts in the official template. Batched prompts of different lengths
// are LEFT-padded and share RoPE positions: RoPE attention scores depend only on position differences, so shifting
// a whole sample by its pad count leaves its scores unchanged (up to fp32 rounding of the angles), and padded keys
// are masked out. The official code only decodes one prompt at a time.
import { concat, noGrad, reshape, scope, slice, tensor, Tensor } from '../tensor/index.ts';
import type { OwlBatch } from '../model/batch.ts';
import { mediaTokenLength } from '../model/config.ts';
import { llamaHidden, lmHead } from '../model/llama.ts';
import type { MplugOwl } from '../model/owl.ts';
import { seededRandom } from '../model/init.ts';
import { ConcatKVCache } from './kvcache.ts';
import { checkSamplingOptions, pickToken, type SamplingOptions } from './sample.ts';
import { ArgumentError, OwletError } from '../tensor/errors.ts';
import { countImageTokens, countMediaRuns, IMAGE_TOKEN } from '../data/index.ts';
import { promptIds, type PromptChunking } from './prompt.ts';
import type { Tokenizer } from '../data/index.ts';

export interface GenerateRequest {
  /** The prompt in the official template, with one `<image>` per image, ending in "AI: ". */
  prompt: string;
  /** Preprocessed images [3, R, R] each, in the order of the placeholders. */
  images?: Tensor[];
}

export interface GenerateOptions extends SamplingOptions {
  maxNewTokens?: number;
  seed?: number;
  /** How the prompt text is split into separately encoded chunks (see prompt.ts). */
  chunking?: PromptChunking;
  /** Called with each step's next-token logits, one row per request (HF's output_scores), before a token is picked. */
  onLogits?: (step: number, logits: Float32Array[]) => void;
}

/**
 * Answers each request (a prompt from formatPrompt, with its images from loadImageTensor), batched, with a KV cache;
 * returns the decoded answers in the order of the requests. Defaults: 64 new tokens at most, temperature 1 with no
 * top-k or top-p limit, seed 0 (`greedy: true` or `temperature: 0` picks the most likely token). Bad options, and
 * images that do not fit the prompt's `<image>` markers or the model, throw a typed error (ArgumentError, ShapeError).
 */
export function generate(model: MplugOwl, tok: Tokenizer, reqs: GenerateRequest[], o: GenerateOptions = {}): string[] {
  return generateIds(model, tok, reqs, o).map((ids) => tok.decode(ids));
}

// Bad options throw before any work, naming the option (they used to be accepted: a negative or fractional token count,
// NaN, Infinity — which never stopped —, a top-k that returned undefined ids).
function checkGenerate(reqs: GenerateRequest[], o: GenerateOptions): void {
  const op = 'generate';
  checkSamplingOptions(o, op);
  const n = o.maxNewTokens;
  if (n !== undefined && !(typeof n === 'number' && Number.isInteger(n) && n >= 0)) {
    throw new ArgumentError(`${op}: maxNewTokens must be a whole number >= 0, got ${String(n)}`, op);
  }
  if (o.seed !== undefined && !(typeof o.seed === 'number' && Number.isInteger(o.seed))) {
    throw new ArgumentError(`${op}: seed must be a whole number, got ${String(o.seed)}`, op);
  }
  if (o.onLogits !== undefined && typeof o.onLogits !== 'function') throw new ArgumentError(`${op}: onLogits must be a function`, op);
  if (o.chunking !== undefined && o.chunking !== 'training' && o.chunking !== 'official') {
    throw new ArgumentError(`${op}: chunking must be 'training' or 'official', got ${JSON.stringify(o.chunking)}`, op);
  }
  if (!Array.isArray(reqs) || reqs.length === 0) throw new ArgumentError(`${op}: no requests (want at least one prompt)`, op);
  reqs.forEach((r, i) => {
    if (typeof r?.prompt !== 'string') throw new ArgumentError(`${op}: request ${i} has no prompt string`, op);
    const places = countImageTokens(r.prompt), images = r.images?.length ?? 0;
    if (places !== images) {
      throw new ArgumentError(`${op}: request ${i} has ${images} image(s) for ${places} ${IMAGE_TOKEN} placeholder(s) in its prompt`, op);
    }
    if (r.images !== undefined && (!Array.isArray(r.images) || r.images.some((im) => !(im instanceof Tensor)))) {
      throw new ArgumentError(`${op}: request ${i}: images must be an array of Tensors [3, R, R] (preprocessImage / loadImageTensor)`, op);
    }
  });
}

// Placeholders with no text between them ("<image><image>") become one run of media ids, which the splice reads as one
// image: the others were silently left out of the answer (the official model's gotcha, spec §1.5). Refused instead.
function checkImageRuns(prompts: readonly number[][], reqs: readonly GenerateRequest[]): void {
  prompts.forEach((ids, i) => {
    const images = reqs[i].images?.length ?? 0, runs = countMediaRuns(ids);
    if (runs !== images) {
      throw new ArgumentError(`generate: request ${i}'s ${images} ${IMAGE_TOKEN} placeholders make ${runs} image run(s): placeholders with no ` +
        `text between them merge, and the model would see only the first image; put text between them (the template's own ` +
        `way: one "Human: ${IMAGE_TOKEN}" line per image, formatPrompt({ images }))`, 'generate');
    }
  });
}

/** The new token ids per request (EOS excluded). */
export function generateIds(model: MplugOwl, tok: Tokenizer, reqs: GenerateRequest[], o: GenerateOptions = {}): number[][] {
  checkGenerate(reqs, o);
  const cfg = model.config, M = mediaTokenLength(cfg), text = cfg.text;
  const eos = tok.eos, pad = tok.pad, maxNew = o.maxNewTokens ?? 64;
  const rand = seededRandom(o.seed ?? 0);
  const prompts = reqs.map((r) => promptIds(tok, r.prompt, M, o.chunking));
  checkImageRuns(prompts, reqs);
  const B = prompts.length, T = Math.max(...prompts.map((p) => p.length));
  const ids = new Int32Array(B * T).fill(pad);
  const mask = new Int32Array(B * T);
  prompts.forEach((p, b) => { ids.set(p, b * T + T - p.length); mask.fill(1, b * T + T - p.length, (b + 1) * T); });
  const images = reqs.flatMap((r) => r.images ?? []);
  const out: number[][] = prompts.map(() => []);
  const done = new Array(B).fill(false);
  const cache = new ConcatKVCache(text.numHiddenLayers);
  const ctx = model.context(false);
  let keyMask: number[] = Array.from(mask), picked = 0;
  try {
    noGrad(() => {
      let next = scope(() => {
        const pixels = images.length ? concat(images.map((im) => reshape(im, [1, ...im.shape])), 0) : null;
        const batch: OwlBatch = {
          inputIds: ids, batchSize: B, seqLen: T, numImages: Int32Array.from(reqs.map((r) => r.images?.length ?? 0)),
          nonPaddingMask: new Float32Array(0), nonMediaMask: new Float32Array(0), promptMask: new Float32Array(0), pixelValues: pixels,
        };
        const { x } = model.embed(ctx, batch, T, 0);
        const h = llamaHidden(ctx, text, x, { cache, keyMask: tensor(Int32Array.from(keyMask), [B, T], { device: model.device }) });
        return pick(lmHead(ctx, slice(h, 1, T - 1, 1)));
      });
      for (let step = 0; step < maxNew; step++) {
        for (let b = 0; b < B; b++) {
          if (done[b]) { next[b] = pad; continue; }
          if (next[b] === eos) { done[b] = true; next[b] = pad; continue; }
          out[b].push(next[b]);
        }
        if (done.every(Boolean) || step === maxNew - 1) break;
        keyMask = appendColumn(keyMask, B, T + step, 1);
        const cur = next;
        next = scope(() => {
          const e = reshape(model.embedIds(ctx, Int32Array.from(cur)), [B, 1, text.hiddenSize]);
          const h = llamaHidden(ctx, text, e, {
            cache, pos0: T + step, keyMask: tensor(Int32Array.from(keyMask), [B, T + step + 1], { device: model.device }),
          });
          return pick(lmHead(ctx, h));
        });
      }
    });
  } finally {
    cache.dispose();
  }
  return out;

  function pick(logits: Tensor): number[] {
    const V = logits.shape[logits.ndim - 1];
    const all = logits.toFloat32(), rows = Array.from({ length: B }, (_, b) => all.subarray(b * V, (b + 1) * V));
    o.onLogits?.(picked, rows);
    rows.forEach((row, b) => checkLogits(row, picked, b));
    picked++;
    return rows.map((row) => pickToken(row, o, rand));
  }
}

// NaN logits (a diverged or damaged checkpoint, an overflow) used to come out as fluent-looking garbage: greedy took id 0
// at every step (no logit is > NaN), sampling the last id it had sorted. Refused, naming the step.
function checkLogits(row: Float32Array, step: number, b: number): void {
  let usable = false;
  for (let i = 0; i < row.length; i++) {
    const v = row[i];
    if (Number.isNaN(v) || v === Infinity) {
      throw new OwletError(`generate: step ${step}, request ${b}: the next-token logits hold ${v} (at id ${i}); the model's ` +
        'weights or activations are not finite (a diverged or damaged checkpoint, or an overflow)', 'OWLET_NONFINITE', 'generate');
    }
    if (v !== -Infinity) usable = true;
  }
  if (!usable) throw new OwletError(`generate: step ${step}, request ${b}: every next-token logit is -Infinity`, 'OWLET_NONFINITE', 'generate');
}

function appendColumn(mask: number[], B: number, T: number, v: number): number[] {
  const out: number[] = [];
  for (let b = 0; b < B; b++) { out.push(...mask.slice(b * T, (b + 1) * T), v); }
  return out;
}

