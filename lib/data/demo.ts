// The built-in demo data for `owlet demo`: generated from a seed, nothing downloaded, written as ordinary files in
// the official formats so training reads them exactly as it reads user data.
//
//   <out>/images/{train,eval}/NNNNNN.png     224×224 shape scenes (train and eval images are different files
//                                              drawn from separate random streams)
//   <out>/{train,eval}_captions.jsonl         stage 1: {"image": "images/…png", "text": "a red circle."}
//   <out>/{train,eval}_instructions.jsonl     stage 2: {"text": <template, one image, 1..maxTurns turns>, "image": [...], "task_type": "shapes_sft"}
//   <out>/{train,eval}_text.jsonl             text-only: "What is a plus b?" → "c." (task_type "arith_sft")
//   <out>/{train,eval}_scenes.jsonl           what each image shows (for evaluation): {"image", "shapes": [{shape, color, row, col}]}
//   <out>/warmup_{instructions,captions}.jsonl with warmupScenes > 0: text-only corpora about other scenes, each scene
//                                              written as its grid text (gridText) where an image would be: the
//                                              instructions with the grid in place of `<image>` (stage 2's layout),
//                                              and the caption prompt with the grid + the caption (stage 1's
//                                              layout with data.caption_prompt = captionPrompt(system))
//   <out>/demo.json                           the options used and the file list
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';
import { rng } from './rng.ts';
import { arithmeticPairs, caption, DEFAULT_LAYOUT, gridText, rasterize, sampleScene, sampleTurns, type GridStyle, GRID_STYLES, type Scene, type SceneLayout } from './demo-scene.ts';
import { captionPrompt, formatConversation, IMAGE_TOKEN, SYSTEM_PROMPT } from './template.ts';
import { DataFormatError } from './errors.ts';

export interface DemoOptions {
  out: string;
  seed?: number;
  /** Images in the training split (default 2000). */
  trainImages?: number;
  /** Images in the evaluation split (default 200). */
  evalImages?: number;
  /** Instruction samples written per image (default 1). */
  instructionsPerImage?: number;
  /** Turns per instruction sample: 1..maxTurns (default 3). */
  maxTurns?: number;
  /** Text-only sums held out of train to form the eval set (default 0: both splits hold all 100 sums, so eval
   *  measures whether language-only ability is kept, not generalisation). */
  textHoldout?: number;
  /** Image side (default 224). */
  imageSize?: number;
  /** Shape sizes and jitter within their grid cells (default DEFAULT_LAYOUT). */
  layout?: SceneLayout;
  /** Scenes in the text-only warm-up corpora (default 0: none written). */
  warmupScenes?: number;
  /** Turns per warm-up instruction sample: 1..warmupMaxTurns (default 0: maxTurns). More turns put more answers on
   *  each grid the LLM reads. */
  warmupMaxTurns?: number;
  /** The warm-up's "Is there …?" questions answered "no" are near misses (a shape or colour the scene has, not
   *  together: sampleTurns) where possible (default false; the image splits keep uniform negatives). */
  warmupNearMisses?: boolean;
  /** How the warm-up writes a scene in place of the image (gridText; default 'words'). */
  gridStyle?: GridStyle;
  /** System line of the template (default: the official one, 32 LLaMA tokens; a demo with a small max_length may
   *  want a shorter one: with it, instruction samples are 124–167 ids long at 65 ids per image). */
  system?: string;
}

export interface DemoFiles {
  out: string;
  /** Present when warmupScenes > 0. */
  warmupInstructions?: string; warmupCaptions?: string;
  trainCaptions: string; trainInstructions: string; trainText: string; trainScenes: string;
  evalCaptions: string; evalInstructions: string; evalText: string; evalScenes: string;
}

const SPLIT_KEY = { train: 1, eval: 2 } as const;

const jsonl = (rows: unknown[]): string => rows.map((r) => JSON.stringify(r)).join('\n') + (rows.length ? '\n' : '');

async function writeSplit(out: string, split: 'train' | 'eval', count: number, o: Required<DemoOptions>): Promise<{ captions: unknown[]; instructions: unknown[]; scenes: unknown[] }> {
  const folder = join(out, 'images', split);
  mkdirSync(folder, { recursive: true });
  const captions: unknown[] = [], instructions: unknown[] = [], scenes: unknown[] = [];
  const work: Promise<unknown>[] = [];
  for (let i = 0; i < count; i++) {
    const r = rng(o.seed, SPLIT_KEY[split], i);
    const scene: Scene = sampleScene(r, o.imageSize, o.layout);
    const image = `images/${split}/${String(i).padStart(6, '0')}.png`;
    captions.push({ image, text: caption(scene) });
    for (let k = 0; k < o.instructionsPerImage; k++) {
      const turns = sampleTurns(scene, r, o.maxTurns).map((q) => ({ human: q.question, ai: q.answer }));
      instructions.push({ text: formatConversation({ images: 1, turns, system: o.system }), image: [image], task_type: 'shapes_sft' });
    }
    scenes.push({ image, shapes: scene.shapes.map(({ shape, color, row, col }) => ({ shape, color, row, col })) });
    const raw = rasterize(scene, o.imageSize);
    work.push(sharp(raw, { raw: { width: o.imageSize, height: o.imageSize, channels: 3 } }).png({ compressionLevel: 9 }).toFile(join(out, image)));
    if (work.length >= 16) await Promise.all(work.splice(0));
  }
  await Promise.all(work);
  return { captions, instructions, scenes };
}

/** The warm-up's text corpora: scenes from their own random stream (key 4), no images drawn. */
function warmupCorpora(o: Required<DemoOptions>): { instructions: unknown[]; captions: unknown[] } {
  const instructions: unknown[] = [], captions: unknown[] = [];
  for (let i = 0; i < o.warmupScenes; i++) {
    const r = rng(o.seed, 4, i);
    const scene = sampleScene(r, o.imageSize, o.layout), grid = gridText(scene, o.gridStyle);
    const turns = sampleTurns(scene, r, o.warmupMaxTurns || o.maxTurns, o.warmupNearMisses).map((q) => ({ human: q.question, ai: q.answer }));
    instructions.push({ text: formatConversation({ images: 1, turns, system: o.system }).replace(IMAGE_TOKEN, grid), task_type: 'warmup_sft' });
    captions.push({ text: `${captionPrompt(o.system).replace(IMAGE_TOKEN, grid)}${caption(scene)}`, task_type: 'warmup_sft' });
  }
  return { instructions, captions };
}

/** Generates the demo corpora into `o.out` and returns the file paths. Same seed and options → identical files. */
export async function generateDemoData(options: DemoOptions): Promise<DemoFiles> {
  const o: Required<DemoOptions> = {
    seed: 0, trainImages: 2000, evalImages: 200, instructionsPerImage: 1, maxTurns: 3, textHoldout: 0, imageSize: 224, system: SYSTEM_PROMPT, layout: DEFAULT_LAYOUT, warmupScenes: 0, warmupMaxTurns: 0, warmupNearMisses: false, gridStyle: 'words', ...options,
  };
  for (const k of ['trainImages', 'evalImages', 'instructionsPerImage', 'maxTurns', 'textHoldout', 'imageSize', 'warmupScenes', 'warmupMaxTurns'] as const) {
    if (!Number.isInteger(o[k]) || o[k] < 0) throw new DataFormatError(`demo: ${k} must be a non-negative integer, got ${o[k]}`);
  }
  if (o.maxTurns < 1 || o.imageSize < 24) throw new DataFormatError('demo: maxTurns must be ≥ 1 and imageSize ≥ 24');
  const [lo, hi] = o.layout.size;
  if (!(lo > 0 && lo <= hi && hi <= 1) || !(o.layout.jitter >= 0 && o.layout.jitter <= 1)) {
    throw new DataFormatError(`demo: layout.size must be 0 < lo ≤ hi ≤ 1 and layout.jitter in [0, 1], got ${JSON.stringify(o.layout)}`);
  }
  if (!GRID_STYLES.includes(o.gridStyle)) throw new DataFormatError(`demo: gridStyle must be one of ${GRID_STYLES.join(', ')}, got ${JSON.stringify(o.gridStyle)}`);
  if (o.textHoldout > 100) throw new DataFormatError('demo: textHoldout must be ≤ 100 (there are 100 sums)');
  mkdirSync(o.out, { recursive: true });
  const train = await writeSplit(o.out, 'train', o.trainImages, o);
  const ev = await writeSplit(o.out, 'eval', o.evalImages, o);

  // Text-only sums: a seeded holdout goes to eval only; the rest are in both splits.
  const sums = arithmeticPairs();
  const r = rng(o.seed, 3);
  for (let i = sums.length - 1; i > 0; i--) { const j = r.int(i + 1); [sums[i], sums[j]] = [sums[j], sums[i]]; }
  const held = sums.slice(0, o.textHoldout), kept = sums.slice(o.textHoldout);
  const textRow = (q: { question: string; answer: string }) =>
    ({ text: formatConversation({ turns: [{ human: q.question, ai: q.answer }], system: o.system }), task_type: 'arith_sft' });

  const f = (name: string) => join(o.out, name);
  const files: DemoFiles = {
    out: o.out,
    trainCaptions: f('train_captions.jsonl'), trainInstructions: f('train_instructions.jsonl'), trainText: f('train_text.jsonl'), trainScenes: f('train_scenes.jsonl'),
    evalCaptions: f('eval_captions.jsonl'), evalInstructions: f('eval_instructions.jsonl'), evalText: f('eval_text.jsonl'), evalScenes: f('eval_scenes.jsonl'),
  };
  writeFileSync(files.trainCaptions, jsonl(train.captions));
  writeFileSync(files.trainInstructions, jsonl(train.instructions));
  writeFileSync(files.trainText, jsonl(kept.map(textRow)));
  writeFileSync(files.trainScenes, jsonl(train.scenes));
  writeFileSync(files.evalCaptions, jsonl(ev.captions));
  writeFileSync(files.evalInstructions, jsonl(ev.instructions));
  writeFileSync(files.evalText, jsonl([...(o.textHoldout ? held : kept)].map(textRow)));
  writeFileSync(files.evalScenes, jsonl(ev.scenes));
  if (o.warmupScenes > 0) {
    files.warmupInstructions = f('warmup_instructions.jsonl');
    files.warmupCaptions = f('warmup_captions.jsonl');
    const w = warmupCorpora(o);
    writeFileSync(files.warmupInstructions, jsonl(w.instructions));
    writeFileSync(files.warmupCaptions, jsonl(w.captions));
  }
  const { out: _out, ...opts } = o;
  writeFileSync(f('demo.json'), JSON.stringify({ generator: 'owlet demo data v1', options: opts, files: Object.fromEntries(Object.entries(files).filter(([k]) => k !== 'out').map(([k, v]) => [k, v.slice(o.out.length + 1)])) }, null, 2) + '\n');
  return files;
}
