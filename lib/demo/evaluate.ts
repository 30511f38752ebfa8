// The demo's evaluation on the held-out split: caption exact match (stage 1), question accuracy by question type
// (stage 2) and text-only (arithmetic) accuracy, all by greedy generation with the KV cache, in batches.
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { formatPrompt, SPLIT_TEXT, type Tokenizer, type Turn } from '../data/index.ts';
import { generate } from '../generate/index.ts';
import { loadImageTensor } from '../generate/owleval.ts';
import type { MplugOwl } from '../model/owl.ts';
import { scope, type Tensor } from '../tensor/index.ts';

interface Item { prompt: string; image?: string; want: string; kind: string }

const rows = (file: string): Record<string, unknown>[] => readFileSync(file, 'utf8').split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l));

/** "What color is the circle?" → "color"; the demo's four question types, plus arithmetic. */
export function questionType(q: string): string {
  if (q.startsWith('What color')) return 'color';
  if (q.startsWith('What shape')) return 'shape';
  if (q.startsWith('How many')) return 'count';
  if (q.startsWith('Is there')) return 'exists';
  if (/plus/.test(q)) return 'arithmetic';
  return 'other';
}

/** Splits a training conversation into its turns (after the system line and image lines). */
export function turnsOf(text: string): Turn[] {
  const parts = text.split(SPLIT_TEXT);
  const turns: Turn[] = [];
  for (let i = 1; i + 3 < parts.length + 1; i++) {
    if (parts[i] === '\nHuman: ' && parts[i + 2] === 'AI: ' && parts[i + 1] !== '<image>') {
      turns.push({ human: parts[i + 1].replace(/\n$/, ''), ai: parts[i + 3] ?? '' });
      i += 3;
    }
  }
  return turns;
}

export function instructionItems(file: string, system: string): Item[] {
  const items: Item[] = [];
  for (const r of rows(file)) {
    const images = (r.image as string[] | undefined) ?? [];
    const turns = turnsOf(r.text as string);
    turns.forEach((t, i) => items.push({
      prompt: formatPrompt(t.human, { images: images.length, history: turns.slice(0, i), system }),
      image: images[0] ? resolve(dirname(file), images[0]) : undefined, want: t.ai, kind: questionType(t.human),
    }));
  }
  return items;
}

/** Caption items; `prompt` is the stage's data.caption_prompt (default: the image alone, as BOS + image + caption). */
function captionItems(file: string, prompt = '<image>'): Item[] {
  return rows(file).map((r) => ({ prompt, image: resolve(dirname(file), r.image as string), want: r.text as string, kind: 'caption' }));
}

export interface Accuracy { correct: number; total: number; accuracy: number }
export type AccuracyByKind = Record<string, Accuracy>;

async function run(model: MplugOwl, tok: Tokenizer, items: Item[], batch = 32, maxNewTokens = 24): Promise<AccuracyByKind> {
  const out: AccuracyByKind = {};
  const R = model.config.vision.imageSize;
  for (let s = 0; s < items.length; s += batch) {
    const chunk = items.slice(s, s + batch);
    const images: (Tensor | undefined)[] = await Promise.all(chunk.map((it) => (it.image ? loadImageTensor(it.image, R) : undefined)));
    const answers = scope(() => generate(model, tok, chunk.map((it, i) => ({ prompt: it.prompt, images: images[i] ? [images[i]!] : [] })),
      { greedy: true, maxNewTokens }));
    images.forEach((t) => t?.dispose());
    chunk.forEach((it, i) => {
      const a = (out[it.kind] ??= { correct: 0, total: 0, accuracy: 0 });
      a.total++;
      if (answers[i].trim() === it.want.trim()) a.correct++;
    });
  }
  let c = 0, t = 0;
  for (const k of Object.keys(out)) { out[k].accuracy = out[k].correct / out[k].total; if (k !== 'arithmetic') { c += out[k].correct; t += out[k].total; } }
  if (t && Object.keys(out).length > 1) out.all_questions = { correct: c, total: t, accuracy: c / t };
  return out;
}

export const evalCaptions = (m: MplugOwl, tok: Tokenizer, file: string, limit?: number, prompt?: string) =>
  run(m, tok, captionItems(file, prompt).slice(0, limit));
export const evalInstructions = (m: MplugOwl, tok: Tokenizer, file: string, system: string, limit?: number) =>
  run(m, tok, instructionItems(file, system).slice(0, limit));
