// `owlet demo`: on built-in data, with no downloads and no GPU — generate the data, warm up a tiny LLaMA on text,
// stage 1 (LLM frozen) on captions, stage 2 (LoRA + abstractor) on instructions mixed with text, then evaluate on the
// held-out split and print a short report. Stage configs are the shipped configs/demo-*.yaml with their
// `runs/demo` paths moved under --out.
import { existsSync, readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { cpus } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { captionPrompt, generateDemoData, llamaTokenizer } from '../data/index.ts';
import { loadModel } from '../model/index.ts';
import { cpu } from '../native.ts';
import { parseConfigText, validateConfig } from '../train/config.ts';
import type { OwletConfig } from '../train/config-schema.ts';
import { owlComponents } from '../train/owl-components.ts';
import { trainStage } from '../train/stage.ts';
import { evalCaptions, evalInstructions, type AccuracyByKind } from './evaluate.ts';

/** The template's system line for the demo: short, so samples stay short (the official line is 32 tokens). */
export const DEMO_SYSTEM = 'A chat between a human and an AI.';
/** The demo's images: 96 px, and the ViT's 32-px patches (configs/demo-warmup.yaml) put each of the scene's 3×3
 *  cells, and so each whole shape, in one patch; shapes fill 55–85% of their cell. (At 224 px the tiny ViT learned
 *  shapes several times slower per second; with 16-px patches a shape spans 2×2 patches and stage 1 learned shapes
 *  more slowly: bench/results/demo_2026-11-26.md, session 4.) */
export const DEMO_IMAGE_SIZE = 96;
export const DEMO_LAYOUT = { size: [0.55, 0.85] as const, jitter: 1 };
/** Scenes in the text warm-up corpora (grid descriptions, no images): many more than there are images, so the LLM
 *  learns to read any scene rather than the 2000 training ones. */
export const DEMO_WARMUP_SCENES = 20000;
/** Turns per warm-up conversation (1–4; the image splits have 1–2): more answers per grid the LLM reads. With 4, grid
 *  questions answered from the text went from 78.7% to 83.9% at the same steps (bench/results/demo_2026-11-26.md). */
export const DEMO_WARMUP_TURNS = 4;
/** How the warm-up writes a scene: one code per cell ("x A x x x x x x L.", gridText), which the warmed-up LLM reads
 *  at 98.7% against 88.2% for two words per cell, whose colour answers need the colour word bound to the shape word
 *  after it; 10 image tokens (9 queries). Whole demo: 83.9% → 96.1% of the questions
 *  (bench/results/demo_2026-11-26.md, session 5). */
export const DEMO_GRID_STYLE = 'codes' as const;
const root = join(dirname(fileURLToPath(import.meta.url)), '../..');

export interface DemoOptions {
  out?: string;
  device?: 'cpu' | 'cuda' | 'auto';
  /** Scale every stage's step count (tests use a small fraction). */
  stepScale?: number;
  /** Images per split (default 2000 / 200). */
  trainImages?: number;
  evalImages?: number;
  /** Near-miss negatives in the warm-up's yes/no questions (default true: generateDemoData's warmupNearMisses). */
  warmupNearMisses?: boolean;
  /** Cap on evaluated items per metric (default: all). */
  evalLimit?: number;
  log?: (line: string) => void;
  progress?: boolean;
}

export interface DemoReport {
  out: string;
  /** Where it ran. The report's last digits depend on it: the CPU backend's f32 GEMMs go through the BLAS kernels
   *  OpenBLAS picks for the CPU (DYNAMIC_ARCH), and another kernel adds in another order. */
  machine: { cpu: string; threads: number; blas: string };
  seconds: Record<string, number>;
  captionExactMatch: AccuracyByKind;
  questions: AccuracyByKind;
  textBefore: AccuracyByKind;
  textAfter: AccuracyByKind;
}

function stageConfig(name: string, out: string, o: DemoOptions): OwletConfig {
  const text = readFileSync(join(root, 'configs', `demo-${name}.yaml`), 'utf8').replaceAll('runs/demo', out);
  const raw = parseConfigText(text, `configs/demo-${name}.yaml`) as Record<string, Record<string, unknown>>;
  if (o.device && o.device !== 'cpu') raw.run.device = o.device;
  const steps = raw.training.steps as number;
  if (o.stepScale) {
    raw.training.steps = Math.max(2, Math.round(steps * o.stepScale));
    const sched = raw.schedule as Record<string, number>;
    sched.warmup_steps = Math.min(sched.warmup_steps, (raw.training.steps as number) - 1);
    (raw.logging as Record<string, number>).save_every = 0;
  }
  return validateConfig(raw, `configs/demo-${name}.yaml`);
}

const pct = (a: AccuracyByKind | undefined, k: string) => (a?.[k] ? `${(100 * a[k].accuracy).toFixed(1)}% (${a[k].correct}/${a[k].total})` : 'n/a');

/** `owlet demo`: generates the data under `out` (default runs/demo), runs the warm-up and both stages (each resumed
 *  if an earlier demo over the same folder was stopped), evaluates, and writes report.json / report.txt. */
export async function runDemo(o: DemoOptions = {}): Promise<DemoReport> {
  const out = resolve(o.out ?? 'runs/demo');
  const log = o.log ?? console.log;
  const seconds: Record<string, number> = {};
  const t0 = performance.now();
  let t = t0;
  const lap = (k: string) => { const now = performance.now(); seconds[k] = +((now - t) / 1000).toFixed(1); t = now; };
  log(`owlet demo → ${out} (CPU backend: ${String(cpu().info().threads)} threads)`);

  const data = join(out, 'data');
  if (!existsSync(join(data, 'demo.json'))) {
    await generateDemoData({ out: data, system: DEMO_SYSTEM, maxTurns: 2, imageSize: DEMO_IMAGE_SIZE, layout: DEMO_LAYOUT,
      warmupScenes: DEMO_WARMUP_SCENES, warmupMaxTurns: DEMO_WARMUP_TURNS, gridStyle: DEMO_GRID_STYLE, warmupNearMisses: o.warmupNearMisses ?? true, trainImages: o.trainImages ?? 2000, evalImages: o.evalImages ?? 200 });
  }
  lap('data');
  log(`data: ${data}`);

  const components = owlComponents();
  const tok = llamaTokenizer();
  const stage = async (name: string) => {
    const config = stageConfig(name, out, o);
    log(`— ${name}: ${config.training.steps} steps, training ${config.stage.train.join(' + ')}`);
    // resume: a demo run again over the same --out continues (or just re-exports) instead of starting over.
    await trainStage(config, components, { log, warn: log, progress: o.progress ?? false, resume: 'auto' });
    const final = join(config.run.out_dir, 'final');
    writeFileSync(join(final, 'owlet.json'), JSON.stringify({ system: DEMO_SYSTEM }) + '\n');
    lap(name);
    return final;
  };
  const dispose = (m: ReturnType<typeof loadModel>) => { for (const p of m.params.values()) p.dispose(); };

  await stage('warmup');
  const s1 = await stage('stage1');
  let m = loadModel(s1);
  const captionExactMatch = await evalCaptions(m, tok, join(data, 'eval_captions.jsonl'), o.evalLimit, captionPrompt(DEMO_SYSTEM));
  const textBefore = await evalInstructions(m, tok, join(data, 'eval_text.jsonl'), DEMO_SYSTEM, o.evalLimit);
  dispose(m);
  lap('eval_stage1');
  log(`after stage 1: caption exact match ${pct(captionExactMatch, 'caption')}; text-only accuracy ${pct(textBefore, 'arithmetic')}`);

  const s2 = await stage('stage2');
  m = loadModel(s2, { adapterDir: join(s2, 'adapter') });
  const questions = await evalInstructions(m, tok, join(data, 'eval_instructions.jsonl'), DEMO_SYSTEM, o.evalLimit);
  const textAfter = await evalInstructions(m, tok, join(data, 'eval_text.jsonl'), DEMO_SYSTEM, o.evalLimit);
  dispose(m);
  lap('eval_stage2');
  seconds.total = +((performance.now() - t0) / 1000).toFixed(1);

  const info = cpu().info() as { threads?: unknown; blas?: unknown };
  const machine = { cpu: cpus()[0]?.model ?? 'unknown', threads: Number(info.threads), blas: String(info.blas ?? 'unknown') };
  const report: DemoReport = { out, machine, seconds, captionExactMatch, questions, textBefore, textAfter };
  writeFileSync(join(out, 'report.json'), JSON.stringify(report, null, 1) + '\n');
  const lines = [
    'owlet demo report',
    `  caption exact match after stage 1: ${pct(captionExactMatch, 'caption')}`,
    `  question accuracy after stage 2:   ${pct(questions, 'all_questions')}`,
    ...['color', 'shape', 'count', 'exists'].map((k) => `    ${k.padEnd(8)} ${pct(questions, k)}`),
    `  text-only accuracy: before stage 2 ${pct(textBefore, 'arithmetic')}, after ${pct(textAfter, 'arithmetic')}`,
    `  time: ${Object.entries(seconds).map(([k, v]) => `${k} ${v}s`).join(', ')}`,
    `  machine: ${machine.cpu}, ${machine.threads} threads, ${machine.blas}`,
    `  try:  npx owlet generate --checkpoint ${s2} --image ${join(data, 'images/eval/000000.png')} --prompt "How many shapes are there?" --temperature 0`,
  ];
  writeFileSync(join(out, 'report.txt'), lines.join('\n') + '\n');
  for (const l of lines) log(l);
  mkdirSync(out, { recursive: true });
  return report;
}
