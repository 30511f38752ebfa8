// owlet generate / owlet eval: load a trained model directory (model.safetensors + config.json, optional adapter/,
// optional tokenizer files, optional owlet.json with the template's system line) and answer prompts.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { formatPrompt, llamaTokenizer, loadTokenizer, type Tokenizer } from '../../data/index.ts';
import {
  appendAnswer, generate, loadImageTensor, readAnswers, readQuestions, answerQuestions, writeAnswers, type GenerateOptions,
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

function num(v: unknown, name: string, int = false): number {
  const n = Number(v);
  if (!Number.isFinite(n) || (int && !Number.isInteger(n))) throw new UsageError(`--${name} must be a${int ? 'n integer' : ' number'}, got ${String(v)}`);
  return n;
}

function sampling(o: Record<string, unknown>): GenerateOptions {
  const temperature = num(o.temperature ?? 1, 'temperature');
  return {
    maxNewTokens: num(o.maxNewTokens ?? 512, 'max-new-tokens', true), temperature, greedy: temperature === 0,
    topK: num(o.topK ?? 0, 'top-k', true), topP: num(o.topP ?? 1, 'top-p'), seed: num(o.seed ?? 0, 'seed', true),
    chunking: (o.chunking as GenerateOptions['chunking']) ?? 'training',
  };
}

export async function generateCommand(o: Record<string, unknown>, io: CliIO): Promise<void> {
  const { model, tok, system } = loadRunModel(String(o.checkpoint));
  const images = await Promise.all((o.image as string[]).map((p) => loadImageTensor(p, model.config.vision.imageSize)));
  const prompt = formatPrompt(String(o.prompt), { images: images.length, system: (o.system as string | undefined) ?? system });
  io.out(generate(model, tok, [{ prompt, images }], sampling(o))[0]);
}

export async function evalCommand(o: Record<string, unknown>, io: CliIO): Promise<void> {
  const { model, tok, system } = loadRunModel(String(o.checkpoint));
  const qs = readQuestions(String(o.questions));
  // Each answer is appended as soon as it exists, and a run stopped half-way continues after the answers it wrote.
  const out = String(o.out);
  const done = readAnswers(out, qs);
  // (said plainly: a rerun for another checkpoint into the same file would otherwise keep the earlier model's answers)
  if (done.length) io.out(`continuing after the ${done.length} answers already in ${out} (move it away to answer them again)`);
  writeAnswers(out, done); // (rewritten: a line cut short by the interruption goes; the folder made)
  const answers = await answerQuestions(model, tok, qs, String(o.images), {
    ...sampling({ temperature: 0, maxNewTokens: 256, ...o }), modelId: String(o.modelId ?? 'owlet'), system: (o.system as string | undefined) ?? system,
    done, onAnswer: (a) => appendAnswer(out, a),
  });
  io.out(`answered ${answers.length - done.length} questions into ${out} (${answers.length} in all)`);
}
