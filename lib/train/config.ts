// Loading a run configuration: YAML → `--set` overrides → schema validation. Every problem is reported before any
// work starts, as `<field path>: <reason>`, all issues on one line.
import { readFileSync } from 'node:fs';
import YAML from 'yaml';
import type { z } from 'zod';
import { OwletConfig } from './config-schema.ts';
import { ConfigError, UsageError } from './errors.ts';
import { PRESETS, readSizes, type OwlSizes, type PresetName } from './model-sizes.ts';

export { OwletConfig } from './config-schema.ts';
export type { OwletConfigInput } from './config-schema.ts';

type Obj = Record<string, unknown>;

/** `a.b.0.c=value` → path and a typed value (the value is parsed as YAML: numbers, booleans, lists, null). */
export function parseOverride(spec: string): { path: (string | number)[]; value: unknown } {
  const eq = spec.indexOf('=');
  if (eq <= 0) throw new UsageError(`--set '${spec}': expected key=value with a dotted key (e.g. optimizer.lr=1e-4)`);
  const key = spec.slice(0, eq).trim();
  if (!/^[A-Za-z_][A-Za-z0-9_-]*(\.([A-Za-z_][A-Za-z0-9_-]*|\d+))*$/.test(key)) {
    throw new UsageError(`--set '${spec}': '${key}' is not a dotted key (letters, digits, _ and list indices)`);
  }
  // (these name JS's object machinery, not config fields: setting them would change every object of the process)
  const forbidden = key.split('.').find((p) => p === '__proto__' || p === 'constructor' || p === 'prototype');
  if (forbidden) throw new UsageError(`--set '${spec}': '${forbidden}' is not a config field`);
  let value: unknown;
  try {
    value = YAML.parse(spec.slice(eq + 1));
  } catch (e) {
    throw new UsageError(`--set '${spec}': the value is not valid YAML (${(e as Error).message.split('\n')[0]})`);
  }
  return { path: key.split('.').map((p) => (/^\d+$/.test(p) ? Number(p) : p)), value: value ?? null };
}

/** Sets a dotted path inside a raw config object, creating objects (or lists, for numeric keys) on the way. null deletes. */
export function applyOverride(raw: Obj, path: (string | number)[], value: unknown): void {
  let node: Obj | unknown[] = raw;
  for (let i = 0; i < path.length - 1; i++) {
    const k = path[i];
    const cur = (node as Obj)[k as string];
    if (cur === undefined || cur === null) {
      const fresh = typeof path[i + 1] === 'number' ? [] : {};
      (node as Obj)[k as string] = fresh;
      node = fresh;
    } else if (typeof cur === 'object') {
      node = cur as Obj;
    } else {
      throw new UsageError(`--set ${path.join('.')}: '${path.slice(0, i + 1).join('.')}' is a ${typeof cur}, not a section`);
    }
  }
  const last = path[path.length - 1];
  if (value === null) {
    if (Array.isArray(node) && typeof last === 'number') node.splice(last, 1);
    else delete (node as Obj)[last as string];
  } else (node as Obj)[last as string] = value;
}

function describe(issue: z.core.$ZodIssue): string {
  const at = issue.path.length ? issue.path.join('.') : '(top level)';
  return `${at}: ${issue.message}`;
}

/** Validates a raw (already overridden) config; throws ConfigError listing every issue. */
export function validateConfig(raw: unknown, source = 'config'): OwletConfig {
  const r = OwletConfig.safeParse(raw);
  if (!r.success) throw new ConfigError(`invalid ${source}: ${r.error.issues.map(describe).join('; ')}`);
  return r.data;
}

export function parseConfigText(text: string, source = 'config'): Obj {
  const doc = YAML.parseDocument(text, { prettyErrors: true });
  if (doc.errors.length) {
    const e = doc.errors[0];
    const where = e.linePos ? ` (line ${e.linePos[0].line}, column ${e.linePos[0].col})` : '';
    throw new ConfigError(`invalid ${source}: not valid YAML${where}: ${e.message.split('\n')[0]}`);
  }
  let raw: unknown;
  try {
    raw = doc.toJS();
  } catch (e) { // (aliases expanding past the parser's limit: "Excessive alias count…", without the file's name)
    throw new ConfigError(`invalid ${source}: ${(e as Error).message.split('\n')[0]}`);
  }
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
    throw new ConfigError(`invalid ${source}: the top level must be a mapping (run:, model:, stage:, …)`);
  }
  return raw as Obj;
}

/** Reads a YAML config, applies `--set` overrides in order, validates. */
export function loadConfig(file: string, overrides: readonly string[] = []): OwletConfig {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : code === 'EISDIR' ? 'it is a directory' : (e as Error).message;
    throw new ConfigError(`cannot read config '${file}': ${why}`);
  }
  const raw = parseConfigText(text, file);
  for (const o of overrides) {
    const { path, value } = parseOverride(o);
    applyOverride(raw, path, value);
  }
  return validateConfig(raw, file);
}

/** The model sizes a config names (preset, config.json, or inline). */
export function modelSizes(c: OwletConfig): OwlSizes {
  if (c.model.sizes) return c.model.sizes;
  if (c.model.preset) return structuredClone(PRESETS[c.model.preset as PresetName]) as OwlSizes;
  return readSizes(c.model.config!);
}

/**
 * Micro-batches each rank accumulates per optimizer step: training.grad_accum, or global_batch / (micro_batch × world
 * size) when training.global_batch is set (it must divide evenly).
 */
export function gradAccumFor(c: OwletConfig, worldSize = 1): number {
  const g = c.training.global_batch;
  if (g === undefined) return c.training.grad_accum;
  const per = c.data.micro_batch * worldSize;
  if (g % per !== 0) {
    throw new ConfigError(`training.global_batch=${g} is not a multiple of data.micro_batch × world size = ${c.data.micro_batch} × ${worldSize} = ${per}`);
  }
  return g / per;
}

/** Optimizer steps of the run: training.steps, or ceil(epochs × max(1, ⌊micro-batches per epoch / grad_accum⌋)) as
 *  the HF Trainer computes max_steps (micro-batches per epoch of this rank, and its accumulation). */
export function totalSteps(c: OwletConfig, microBatchesPerEpoch?: number, gradAccum = gradAccumFor(c)): number {
  if (c.training.steps !== undefined) return c.training.steps;
  if (microBatchesPerEpoch === undefined) {
    throw new ConfigError('training.epochs needs the data length; give training.steps instead, or load the data first');
  }
  if (microBatchesPerEpoch < 1) throw new ConfigError('training.epochs: the training data holds no complete micro-batch');
  const perEpoch = Math.max(1, Math.floor(microBatchesPerEpoch / gradAccum));
  const steps = Math.ceil(perEpoch * c.training.epochs!);
  // (past 2^53 a step count no longer counts: step + 1 === step, and the run never ends)
  if (!Number.isSafeInteger(steps)) throw new ConfigError(`training.epochs = ${c.training.epochs} makes ${steps} optimizer steps: more than a run can count`);
  return steps;
}

/**
 * A copy of a (resolved, JSON) run config with every setting that names a file — model.config/weights/adapter,
 * data.images_dir/tokenizer, each data file's path — mapped by `f`: the ranks compare their names (basename), a
 * resume compares the files as absolute paths (resolve).
 */
export function mapConfigPaths<T>(config: T, f: (path: string) => string): T {
  const c = JSON.parse(JSON.stringify(config)) as { model?: Record<string, unknown>; data?: Record<string, unknown> };
  const map = (o: Record<string, unknown> | undefined, k: string) => { if (o && typeof o[k] === 'string') o[k] = f(o[k] as string); };
  for (const k of ['config', 'weights', 'adapter']) map(c.model, k);
  for (const k of ['images_dir', 'tokenizer']) map(c.data, k);
  for (const split of ['train', 'eval']) {
    const files = c.data?.[split];
    if (Array.isArray(files)) for (const file of files) if (file && typeof file === 'object') map(file as Record<string, unknown>, 'path');
  }
  return c as T;
}
