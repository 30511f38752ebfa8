// Answering OwlEval-style question files: questions.jsonl rows {image, question_id, question} become answers.jsonl
// rows {image, question_id, question, answer, model_id}. Questions that share an image and follow each other are a
// multi-turn dialogue (OwlEval's convention): earlier answers are kept in the prompt.
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { formatPrompt, preprocessImage, type Tokenizer, type Turn } from '../data/index.ts';
import type { MplugOwl } from '../model/owl.ts';
import { ArgumentError, scope, tensor, type Tensor } from '../tensor/index.ts';
import { generate, type GenerateOptions } from './generate.ts';

export interface OwlEvalQuestion { image: string; question_id: number | string; question: string }
export interface OwlEvalAnswer extends OwlEvalQuestion { answer: string; model_id: string }

export function readQuestions(file: string): OwlEvalQuestion[] {
  return readFileSync(file, 'utf8').split('\n').filter((l) => l.trim()).map((l, i) => {
    let o: Record<string, unknown>;
    try { o = JSON.parse(l); } catch (e) { throw new ArgumentError(`${file}:${i + 1}: not JSON (${(e as Error).message})`, 'eval'); }
    if (typeof o.image !== 'string' || typeof o.question !== 'string' || o.question_id === undefined) {
      throw new ArgumentError(`${file}:${i + 1}: needs string "image", string "question" and "question_id"`, 'eval');
    }
    return { image: o.image, question: o.question, question_id: o.question_id as number | string };
  });
}

export async function loadImageTensor(path: string, resolution: number): Promise<Tensor> {
  return tensor(await preprocessImage(path, { resolution, mode: 'eval' }), [3, resolution, resolution]);
}

export interface OwlEvalOptions extends GenerateOptions {
  modelId?: string;
  system?: string;
  /** Treat consecutive questions on the same image as one dialogue (default true). */
  multiTurn?: boolean;
}

export async function answerQuestions(model: MplugOwl, tok: Tokenizer, questions: OwlEvalQuestion[], imagesDir: string,
  o: OwlEvalOptions = {}): Promise<OwlEvalAnswer[]> {
  const out: OwlEvalAnswer[] = [];
  let history: Turn[] = [], lastImage = '';
  const R = model.config.vision.imageSize;
  for (const q of questions) {
    if (q.image !== lastImage || o.multiTurn === false) history = [];
    lastImage = q.image;
    const img = await loadImageTensor(join(imagesDir, q.image), R);
    const answer = scope(() => generate(model, tok, [{ prompt: formatPrompt(q.question, { images: 1, history, system: o.system }), images: [img] }], o)[0]);
    img.dispose();
    history.push({ human: q.question, ai: answer });
    out.push({ ...q, answer, model_id: o.modelId ?? 'owlet' });
  }
  return out;
}

export function writeAnswers(file: string, answers: OwlEvalAnswer[]): void {
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, answers.map((a) => JSON.stringify(a)).join('\n') + '\n');
}
