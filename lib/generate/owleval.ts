// Answering OwlEval-style question files: questions.jsonl rows {image, question_id, question} become answers.jsonl
// rows {image, question_id, question, answer, model_id}. Questions that share an image and follow each other are a
// multi-turn dialogue (OwlEval's convention): earlier answers are kept in the prompt.
import { appendFileSync, existsSync, readFileSync, statSync, writeFileSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { formatPrompt, preprocessImage, type Tokenizer, type Turn } from '../data/index.ts';
import type { MplugOwl } from '../model/owl.ts';
import { ArgumentError, scope, tensor, type Tensor } from '../tensor/index.ts';
import { generate, type GenerateOptions } from './generate.ts';

export interface OwlEvalQuestion { image: string; question_id: number | string; question: string }
export interface OwlEvalAnswer extends OwlEvalQuestion { answer: string; model_id: string }

export function readQuestions(file: string): OwlEvalQuestion[] {
  if (!existsSync(file)) throw new ArgumentError(`questions file ${file}: not found`, 'eval');
  if (statSync(file).isDirectory()) throw new ArgumentError(`questions file ${file} is a folder`, 'eval');
  const qs = readFileSync(file, 'utf8').split('\n').filter((l) => l.trim()).map((l, i) => {
    let o: Record<string, unknown>;
    try { o = JSON.parse(l); } catch (e) { throw new ArgumentError(`${file}:${i + 1}: not JSON (${(e as Error).message})`, 'eval'); }
    if (typeof o.image !== 'string' || typeof o.question !== 'string' || o.question_id === undefined) {
      throw new ArgumentError(`${file}:${i + 1}: needs string "image", string "question" and "question_id"`, 'eval');
    }
    return { image: o.image, question: o.question, question_id: o.question_id as number | string };
  });
  if (!qs.length) throw new ArgumentError(`questions file ${file} holds no questions`, 'eval');
  return qs;
}

export async function loadImageTensor(path: string, resolution: number): Promise<Tensor> {
  return tensor(await preprocessImage(path, { resolution, mode: 'eval' }), [3, resolution, resolution]);
}

export interface OwlEvalOptions extends GenerateOptions {
  modelId?: string;
  system?: string;
  /** Treat consecutive questions on the same image as one dialogue (default true). */
  multiTurn?: boolean;
  /** Answers already given to the first questions (an interrupted run's, readAnswers): kept, not asked again. */
  done?: OwlEvalAnswer[];
  /** Called with each new answer as soon as it exists (appendAnswer writes it out). */
  onAnswer?: (a: OwlEvalAnswer) => void;
}

export async function answerQuestions(model: MplugOwl, tok: Tokenizer, questions: OwlEvalQuestion[], imagesDir: string,
  o: OwlEvalOptions = {}): Promise<OwlEvalAnswer[]> {
  const out: OwlEvalAnswer[] = [];
  let history: Turn[] = [], lastImage = '';
  const R = model.config.vision.imageSize;
  const done = o.done ?? [];
  for (const [i, q] of questions.entries()) {
    if (q.image !== lastImage || o.multiTurn === false) history = [];
    lastImage = q.image;
    if (i < done.length) { // answered before: its answer stays in the dialogue's history
      history.push({ human: q.question, ai: done[i].answer });
      out.push(done[i]);
      continue;
    }
    const img = await loadImageTensor(join(imagesDir, q.image), R);
    const answer = scope(() => generate(model, tok, [{ prompt: formatPrompt(q.question, { images: 1, history, system: o.system }), images: [img] }], o)[0]);
    img.dispose();
    history.push({ human: q.question, ai: answer });
    const a = { ...q, answer, model_id: o.modelId ?? 'owlet' };
    out.push(a);
    o.onAnswer?.(a);
  }
  return out;
}

/**
 * The answers an earlier (interrupted) run wrote to `file` for the first of `questions`, so that a new run continues
 * after them; [] when there is no such file. A file that answers other questions (or is not an answers file) throws
 * rather than being overwritten. A last line cut short by the interruption is dropped.
 */
export function readAnswers(file: string, questions: OwlEvalQuestion[]): OwlEvalAnswer[] {
  if (!existsSync(file)) return [];
  if (statSync(file).isDirectory()) throw new ArgumentError(`answers file ${file} is a folder`, 'eval');
  const lines = readFileSync(file, 'utf8').split('\n');
  const out: OwlEvalAnswer[] = [];
  for (const [i, l] of lines.entries()) {
    if (!l.trim()) continue;
    let a: OwlEvalAnswer;
    try { a = JSON.parse(l); } catch {
      if (i === lines.length - 1) break; // the line being written when the run stopped
      throw new ArgumentError(`${file}:${i + 1} is not an answer (not JSON); move the file away to start over`, 'eval');
    }
    const q = questions[out.length];
    if (!q || a.question_id !== q.question_id || typeof a.answer !== 'string') {
      throw new ArgumentError(`${file} already holds answers to other questions (line ${i + 1}); move it away or choose another --out`, 'eval');
    }
    out.push(a);
  }
  return out;
}

/** Appends one answer line (writeAnswers made the file and its folder). */
export function appendAnswer(file: string, a: OwlEvalAnswer): void {
  appendFileSync(file, JSON.stringify(a) + '\n');
}

export function writeAnswers(file: string, answers: OwlEvalAnswer[]): void {
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, answers.map((a) => JSON.stringify(a) + '\n').join(''));
}
