// Answering OwlEval-style question files: questions.jsonl rows {image, question_id, question} become answers.jsonl
// rows {image, question_id, question, answer, model_id}. Questions that share an image and follow each other are a
// multi-turn dialogue (OwlEval's convention): earlier answers are kept in the prompt.
import { appendFileSync, existsSync, readFileSync, statSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { formatPrompt, preprocessImage, type Tokenizer, type Turn } from '../data/index.ts';
import type { MplugOwl } from '../model/owl.ts';
import { ArgumentError, scope, tensor, type Tensor } from '../tensor/index.ts';
import { writeFileAtomic } from '../model/io/atomic.ts';
import { generate, type GenerateOptions } from './generate.ts';

export interface OwlEvalQuestion { image: string; question_id: number | string; question: string }
export interface OwlEvalAnswer extends OwlEvalQuestion { answer: string; model_id: string }

/** The questions of a questions.jsonl, in order. A bad row throws naming its line in the file (blank lines counted). */
export function readQuestions(file: string): OwlEvalQuestion[] {
  return readQuestionLines(file).questions;
}

/** readQuestions, with the file line of each question (for messages about a question). */
export function readQuestionLines(file: string): { questions: OwlEvalQuestion[]; lines: number[] } {
  if (!existsSync(file)) throw new ArgumentError(`questions file ${file}: not found`, 'eval');
  if (statSync(file).isDirectory()) throw new ArgumentError(`questions file ${file} is a folder`, 'eval');
  const questions: OwlEvalQuestion[] = [], lines: number[] = [];
  // (a byte-order mark, as editors on Windows write one, is not JSON: it failed the first row as "not JSON")
  readFileSync(file, 'utf8').replace(/^\uFEFF/, '').split('\n').forEach((l, i) => {
    if (!l.trim()) return;
    const at = `${file}:${i + 1}`; // the file's own line number (counted after the blank lines were dropped, it was off)
    let o: unknown;
    try { o = JSON.parse(l); } catch (e) { throw new ArgumentError(`${at}: not JSON (${(e as Error).message})`, 'eval'); }
    const r = (o !== null && typeof o === 'object' && !Array.isArray(o) ? o : {}) as Record<string, unknown>; // (null: a TypeError)
    const id = r.question_id;
    if (typeof r.image !== 'string' || typeof r.question !== 'string' || !(typeof id === 'string' || (typeof id === 'number' && Number.isFinite(id)))) {
      throw new ArgumentError(`${at}: needs string "image", string "question" and a number or string "question_id"`, 'eval');
    }
    questions.push({ image: r.image, question: r.question, question_id: id });
    lines.push(i + 1);
  });
  if (!questions.length) throw new ArgumentError(`questions file ${file} holds no questions`, 'eval');
  return { questions, lines };
}

/** An image file as the model's input: squash-resized to `resolution` × `resolution` (the model's
 *  `config.vision.imageSize`, 224 for the 7B model) with Pillow's bicubic, as the official processor, and
 *  CLIP-normalised: a [3, R, R] f32 tensor that the caller disposes. */
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
  /** Where the questions came from (readQuestionLines), so that an error names the question's file and line. */
  source?: { file: string; lines: readonly number[] };
}

/** Prefixes an error about one question with where that question is, keeping its class (an ImageError stays one).
 *  (A missing image used to end a long eval naming only the image file, not the question that asked for it.) */
function aboutQuestion(e: unknown, qs: readonly OwlEvalQuestion[], i: number, o: OwlEvalOptions): unknown {
  if (!(e instanceof Error)) return e;
  const line = o.source?.lines[i];
  const where = o.source && line !== undefined ? `${o.source.file}:${line}` : `question ${i + 1} of ${qs.length}`;
  e.message = `${where} (question_id ${JSON.stringify(qs[i].question_id)}): ${e.message}` +
    ` (the ${i} answer(s) before it were given; fix it and run again to continue after them)`;
  return e;
}

/** Answers OwlEval questions (readQuestions) about the images under imagesDir, one at a time (what `owlet eval`
 *  does); consecutive questions on one image form a dialogue unless `multiTurn: false`. */
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
    let answer: string;
    try {
      const img = await loadImageTensor(join(imagesDir, q.image), R);
      try {
        answer = scope(() => generate(model, tok, [{ prompt: formatPrompt(q.question, { images: 1, history, system: o.system }), images: [img] }], o)[0]);
      } finally {
        img.dispose();
      }
    } catch (e) {
      throw aboutQuestion(e, questions, i, o);
    }
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
    // (a row that is JSON but no object — `null` — failed here with a TypeError from reading its fields)
    if (!q || a === null || typeof a !== 'object' || a.question_id !== q.question_id || typeof a.answer !== 'string') {
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

/** Writes `answers` as the whole file, atomically: a rerun rewrites the answers an interrupted run kept, and a kill
 *  during that rewrite must leave them as they were, not cut short. */
export function writeAnswers(file: string, answers: OwlEvalAnswer[]): void {
  mkdirSync(dirname(file), { recursive: true });
  writeFileAtomic(file, answers.map((a) => JSON.stringify(a) + '\n').join(''));
}
