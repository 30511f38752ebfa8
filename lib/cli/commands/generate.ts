// owlet generate / owlet eval: load a trained model directory (model.safetensors + config.json, optional adapter/,
// optional tokenizer files, optional owlet.json with the template's system line) and answer prompts.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { formatPrompt, llamaTokenizer, loadTokenizer, type Tokenizer } from '../../data/index.ts';
import {
  appendAnswer, generate, loadImageTensor, readAnswers, readQuestionLines, answerQuestions, writeAnswers, type GenerateOptions,
} from '../../generate/index.ts';
import { loadModel, type MplugOwl } from '../../model/index.ts';
import { readConfig, tokenizerMismatch } from '../../model/io/index.ts';
import { UsageError } from '../../train/errors.ts';
import type { CliIO } from '../io.ts';

export interface LoadedRunModel { model: MplugOwl; tok: Tokenizer; system?: string }

/** A directory written by training's final export (or any official-layout model directory). */
export function loadRunModel(dir: string): LoadedRunModel {
  if (!existsSync(join(dir, 'config.json'))) throw new UsageError(`${dir}: no config.json (give a model directory, e.g. runs/demo/stage2/final)`);
  const adapterDir = existsSync(join(dir, 'adapter', 'adapter_config.json')) ? join(dir, 'adapter') : null;
  let meta: { system?: string } = {};
  const metaFile = join(dir, 'owlet.json');
  if (existsSync(metaFile)) {
    try { meta = JSON.parse(readFileSync(metaFile, 'utf8')); } catch (e) { throw new UsageError(`${metaFile}: not valid JSON (${(e as Error).message})`); }
  }
  const hasTok = ['tokenizer.model', 'tokenizer.json'].some((f) => existsSync(join(dir, f)));
  const tok = hasTok ? loadTokenizer(dir) : llamaTokenizer();
  // (from config.json alone: no weight is read for a model the tokenizer cannot feed)
  const misfit = tokenizerMismatch(tok, readConfig(dir));
  if (misfit) throw new UsageError(`${dir}: ${misfit}${hasTok ? '' : ' (the folder has no tokenizer: the LLaMA default was taken)'}`);
  return { model: loadModel(dir, { adapterDir }), tok, system: meta.system };
}

/**
 * A numeric flag within its range, or a usage error (exit 2) that names the flag. An empty value was Number('') = 0:
 * `--temperature ""` sampled greedily without a word; a seed past 2^53 or below 0 was taken as given; and a value out
 * of range was refused only inside generate, naming its option (topP) instead of the flag, with exit code 1.
 */
function num(v: unknown, flag: string, ok: (n: number) => boolean, want: string): number {
  const text = String(v).trim();
  const n = text === '' ? NaN : Number(text);
  if (!Number.isFinite(n) || !ok(n)) throw new UsageError(`--${flag} must be ${want}, got '${String(v)}'`);
  return n;
}
const wholeFrom0 = (n: number) => Number.isSafeInteger(n) && n >= 0;

function sampling(o: Record<string, unknown>): GenerateOptions {
  const temperature = num(o.temperature ?? 1, 'temperature', (n) => n >= 0, 'a number >= 0 (0: greedy)');
  return {
    maxNewTokens: num(o.maxNewTokens ?? 512, 'max-new-tokens', wholeFrom0, 'an integer >= 0'), temperature, greedy: temperature === 0,
    topK: num(o.topK ?? 0, 'top-k', wholeFrom0, 'an integer >= 0 (0: no limit)'),
    topP: num(o.topP ?? 1, 'top-p', (n) => n > 0 && n <= 1, 'a number in (0, 1] (1: no limit)'),
    seed: num(o.seed ?? 0, 'seed', wholeFrom0, 'an integer in [0, 2^53)'),
    chunking: (o.chunking as GenerateOptions['chunking']) ?? 'training',
  };
}

export async function generateCommand(o: Record<string, unknown>, io: CliIO): Promise<void> {
  const options = sampling(o); // (before any weight is read)
  const { model, tok, system } = loadRunModel(String(o.checkpoint));
  const images = await Promise.all((o.image as string[]).map((p) => loadImageTensor(p, model.config.vision.imageSize)));
  const prompt = formatPrompt(String(o.prompt), { images: images.length, system: (o.system as string | undefined) ?? system });
  io.out(generate(model, tok, [{ prompt, images }], options)[0]);
}

export async function evalCommand(o: Record<string, unknown>, io: CliIO): Promise<void> {
  const options = sampling({ temperature: 0, maxNewTokens: 256, ...o }); // (before any weight is read)
  const { model, tok, system } = loadRunModel(String(o.checkpoint));
  const questionsFile = String(o.questions);
  const { questions: qs, lines } = readQuestionLines(questionsFile);
  // Each answer is appended as soon as it exists, and a run stopped half-way continues after the answers it wrote.
  const out = String(o.out);
  const done = readAnswers(out, qs);
  // (said plainly: a rerun for another checkpoint into the same file would otherwise keep the earlier model's answers)
  if (done.length) io.out(`continuing after the ${done.length} answers already in ${out} (move it away to answer them again)`);
  writeAnswers(out, done); // (rewritten: a line cut short by the interruption goes; the folder made)
  const answers = await answerQuestions(model, tok, qs, String(o.images), {
    ...options, modelId: String(o.modelId ?? 'owlet'), system: (o.system as string | undefined) ?? system,
    done, onAnswer: (a) => appendAnswer(out, a), source: { file: questionsFile, lines },
  });
  io.out(`answered ${answers.length - done.length} questions into ${out} (${answers.length} in all)`);
}
