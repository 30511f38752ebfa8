// The official mPLUG-Owl `config.json` (spec §1.2–1.4, §2.1) as a typed OwlConfig, and back. Absent fields take the
// defaults of the official config classes (the 7B release); keys owlet does not read (legacy abstractor keys,
// tokenizer ids, anything newer) are kept in `extra` and written back unchanged, so a round trip loses nothing.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { writeFileAtomic } from './atomic.ts';
import { ConfigError } from './errors.ts';

const posInt = z.number().int().positive();
const prob = z.number().min(0).max(1);
const eps = z.number().positive();
const tokenId = z.number().int().nullable();

const visionFields = z.looseObject({
  hidden_size: posInt.default(1024),
  intermediate_size: posInt.default(4096),
  num_hidden_layers: posInt.default(24),
  num_attention_heads: posInt.default(16),
  num_channels: posInt.default(3),
  image_size: posInt.default(224),
  patch_size: posInt.default(14),
  hidden_act: z.string().default('quick_gelu'), // informational: the official MLP hard-codes quick_gelu
  layer_norm_eps: eps.default(1e-6),
  attention_dropout: prob.default(0),
  initializer_range: z.number().nonnegative().default(0.02),
});

const abstractorFields = z.looseObject({
  hidden_size: posInt.default(1024),
  num_hidden_layers: posInt.default(6),
  num_attention_heads: posInt.default(16),
  intermediate_size: posInt.default(2816),
  attention_probs_dropout_prob: prob.default(0.1),
  layer_norm_eps: eps.default(1e-6),
  encoder_hidden_size: posInt.default(1024),
  initializer_range: z.number().nonnegative().default(0.02),
});

const textFields = z.looseObject({
  model_type: z.string().default('llama'),
  vocab_size: posInt.default(32000),
  hidden_size: posInt.default(4096),
  intermediate_size: posInt.default(11008),
  num_hidden_layers: posInt.default(32),
  num_attention_heads: posInt.default(32),
  num_key_value_heads: posInt.nullable().optional(),
  rms_norm_eps: eps.default(1e-6),
  rope_theta: z.number().positive().default(10000),
  max_position_embeddings: posInt.default(2048),
  hidden_act: z.string().default('silu'),
  tie_word_embeddings: z.boolean().default(false),
  bos_token_id: tokenId.default(1),
  eos_token_id: tokenId.default(2),
  pad_token_id: tokenId.default(0),
  initializer_range: z.number().nonnegative().default(0.02),
});

const topFields = z.looseObject({
  model_type: z.string().default('mplug-owl'),
  num_query_tokens: posInt.default(64),
  media_token_length: posInt.optional(),
  initializer_range: z.number().nonnegative().default(0.02),
  vision_config: z.record(z.string(), z.unknown()).default({}),
  visual_abstractor_config: z.record(z.string(), z.unknown()).default({}),
  text_config: z.record(z.string(), z.unknown()).default({}),
});

export interface VisionConfig {
  hiddenSize: number; intermediateSize: number; numHiddenLayers: number; numAttentionHeads: number;
  numChannels: number; imageSize: number; patchSize: number; hiddenAct: string; layerNormEps: number;
  attentionDropout: number; initializerRange: number;
  extra: Record<string, unknown>;
}
export interface AbstractorConfig {
  hiddenSize: number; numHiddenLayers: number; numAttentionHeads: number; intermediateSize: number;
  attentionProbsDropoutProb: number; layerNormEps: number; encoderHiddenSize: number; initializerRange: number;
  extra: Record<string, unknown>;
}
export interface TextConfig {
  modelType: string; vocabSize: number; hiddenSize: number; intermediateSize: number; numHiddenLayers: number;
  numAttentionHeads: number; numKeyValueHeads: number; rmsNormEps: number; ropeTheta: number;
  maxPositionEmbeddings: number; hiddenAct: string; tieWordEmbeddings: boolean; bosTokenId: number | null;
  eosTokenId: number | null; padTokenId: number | null; initializerRange: number;
  extra: Record<string, unknown>;
}
export interface OwlConfig {
  modelType: string;
  numQueryTokens: number;
  /** Tokens each image occupies in the LLM sequence: the queries plus `vit_eos`. */
  mediaTokenLength: number;
  initializerRange: number;
  vision: VisionConfig;
  abstractor: AbstractorConfig;
  text: TextConfig;
  extra: Record<string, unknown>;
}

const camel = (s: string) => s.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase());
const snake = (s: string) => s.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);

/** Splits a parsed loose object into camelCase known fields and the untouched unknown keys. */
function split<T>(schema: z.ZodObject, parsed: Record<string, unknown>, skip: string[] = []): T {
  const known = new Set(Object.keys(schema.shape));
  const out: Record<string, unknown> = { extra: {} };
  for (const [k, v] of Object.entries(parsed)) {
    if (skip.includes(k)) continue;
    if (known.has(k)) out[camel(k)] = v;
    else (out.extra as Record<string, unknown>)[k] = v;
  }
  return out as T;
}

function parseWith<S extends z.ZodObject>(schema: S, raw: unknown, path: string, file?: string): Record<string, unknown> {
  const r = schema.safeParse(raw);
  if (!r.success) {
    const i = r.error.issues[0];
    const at = [path, ...i.path.map(String)].filter(Boolean).join('.');
    throw new ConfigError(`${at || '(top level)'}: ${i.message}`, file);
  }
  return r.data as Record<string, unknown>;
}

/** A typed OwlConfig from the parsed JSON of an official config.json; `file` only improves error messages. */
export function parseOwlConfig(json: unknown, file?: string): OwlConfig {
  const top = parseWith(topFields, json, '', file);
  const vision = split<VisionConfig>(visionFields, parseWith(visionFields, top.vision_config, 'vision_config', file));
  const abstractor = split<AbstractorConfig>(abstractorFields,
    parseWith(abstractorFields, top.visual_abstractor_config, 'visual_abstractor_config', file));
  const textRaw = parseWith(textFields, top.text_config, 'text_config', file);
  const text = split<TextConfig>(textFields, textRaw);
  text.numKeyValueHeads = (textRaw.num_key_value_heads as number | null | undefined) ?? text.numAttentionHeads;
  const rest = split<{ modelType: string; numQueryTokens: number; mediaTokenLength?: number; initializerRange: number;
    extra: Record<string, unknown> }>(topFields, top, ['vision_config', 'visual_abstractor_config', 'text_config']);
  const cfg: OwlConfig = {
    modelType: rest.modelType, numQueryTokens: rest.numQueryTokens, mediaTokenLength: rest.numQueryTokens + 1,
    initializerRange: rest.initializerRange, vision, abstractor, text, extra: rest.extra,
  };
  if (rest.mediaTokenLength !== undefined && rest.mediaTokenLength !== cfg.mediaTokenLength) {
    throw new ConfigError(`media_token_length ${rest.mediaTokenLength} must be num_query_tokens + 1 = ` +
      `${cfg.mediaTokenLength} (the queries plus vit_eos)`, file);
  }
  validateOwlConfig(cfg, file);
  return cfg;
}

/** The consistency rules the official modules impose on the sizes; each failure names the fields. */
export function validateOwlConfig(c: OwlConfig, file?: string): void {
  const fail = (m: string) => { throw new ConfigError(m, file); };
  if (c.modelType !== 'mplug-owl') fail(`model_type '${c.modelType}' is not 'mplug-owl'`);
  const heads = (sec: string, hidden: number, n: number) => {
    if (hidden % n) fail(`${sec}.hidden_size ${hidden} is not divisible by num_attention_heads ${n}`);
  };
  heads('vision_config', c.vision.hiddenSize, c.vision.numAttentionHeads);
  heads('visual_abstractor_config', c.abstractor.hiddenSize, c.abstractor.numAttentionHeads);
  heads('text_config', c.text.hiddenSize, c.text.numAttentionHeads);
  if (c.vision.imageSize % c.vision.patchSize) {
    fail(`vision_config.image_size ${c.vision.imageSize} is not a multiple of patch_size ${c.vision.patchSize}`);
  }
  if (c.abstractor.encoderHiddenSize !== c.vision.hiddenSize) {
    fail(`visual_abstractor_config.encoder_hidden_size ${c.abstractor.encoderHiddenSize} must equal ` +
      `vision_config.hidden_size ${c.vision.hiddenSize} (the abstractor reads the ViT output)`);
  }
  if (c.abstractor.encoderHiddenSize !== c.abstractor.hiddenSize) {
    fail(`visual_abstractor_config.encoder_hidden_size ${c.abstractor.encoderHiddenSize} must equal its hidden_size ` +
      `${c.abstractor.hiddenSize}: the official key/value projections run over [queries; image] together`);
  }
  if (c.text.modelType !== 'llama') fail(`text_config.model_type '${c.text.modelType}' is not supported (only 'llama')`);
  if ((c.text.hiddenSize / c.text.numAttentionHeads) % 2) {
    fail(`text_config head size ${c.text.hiddenSize / c.text.numAttentionHeads} must be even for rotary embeddings`);
  }
  if (c.text.numAttentionHeads % c.text.numKeyValueHeads) {
    fail(`text_config.num_attention_heads ${c.text.numAttentionHeads} is not a multiple of num_key_value_heads ` +
      `${c.text.numKeyValueHeads}`);
  }
  // Sizes far past any real model (LLaMA-65B: 80 layers, width 8192, vocabulary 32000) are a broken file: refused
  // here, before building key lists or allocating (num_hidden_layers 1e8 took half a minute and 3 GB, then threw).
  const limits: [string, number, number][] = [
    ['num_hidden_layers', Math.max(c.vision.numHiddenLayers, c.abstractor.numHiddenLayers, c.text.numHiddenLayers), 4096],
    ['hidden_size', Math.max(c.vision.hiddenSize, c.abstractor.hiddenSize, c.text.hiddenSize), 1 << 17],
    ['intermediate_size', Math.max(c.vision.intermediateSize, c.abstractor.intermediateSize, c.text.intermediateSize), 1 << 19],
    ['text_config.vocab_size', c.text.vocabSize, 1 << 24],
    ['vision_config.image_size', c.vision.imageSize, 1 << 14],
    ['num_query_tokens', c.numQueryTokens, 1 << 16],
  ];
  for (const [what, v, max] of limits) if (v > max) fail(`${what} ${v} is larger than any model owlet can hold (at most ${max})`);
}

/** config.json's `torch_dtype` names of owlet's float dtypes (what transformers' save_pretrained writes). */
export const TORCH_DTYPE_NAMES = { f32: 'float32', bf16: 'bfloat16', f16: 'float16' } as const;

/** Why a tokenizer cannot feed this model (it has ids past the embedding table), or null. */
export function tokenizerMismatch(tok: { vocabSize: number; source: string }, c: OwlConfig): string | null {
  return tok.vocabSize > c.text.vocabSize
    ? `the tokenizer (${tok.source}) has ${tok.vocabSize} ids but the model's text_config.vocab_size is ${c.text.vocabSize}`
    : null;
}

/** Patches per image plus the class token: the ViT sequence length and the position-embedding rows. */
export function visionPositions(c: OwlConfig): number { return (c.vision.imageSize / c.vision.patchSize) ** 2 + 1; }

function unsplit(section: object): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(section)) if (k !== 'extra') out[snake(k)] = v;
  return { ...out, ...(section as { extra: Record<string, unknown> }).extra };
}

/** The official config.json object for `c` (extra keys restored). */
export function owlConfigToJson(c: OwlConfig): Record<string, unknown> {
  return {
    model_type: c.modelType,
    num_query_tokens: c.numQueryTokens,
    media_token_length: c.mediaTokenLength,
    initializer_range: c.initializerRange,
    ...c.extra,
    vision_config: unsplit(c.vision),
    visual_abstractor_config: unsplit(c.abstractor),
    text_config: unsplit(c.text),
  };
}

function readJson(file: string): unknown {
  if (!existsSync(file)) throw new ConfigError('not found', file);
  try {
    return JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw new ConfigError(`is not valid JSON: ${(e as Error).message}`, file);
  }
}

/** `dir/config.json` (or a path to the file itself) as an OwlConfig. */
export function readConfig(dirOrFile: string): OwlConfig {
  const file = dirOrFile.endsWith('.json') ? dirOrFile : join(dirOrFile, 'config.json');
  return parseOwlConfig(readJson(file), file);
}

/** The text of config.json for `c`. */
export function owlConfigText(c: OwlConfig): string { return JSON.stringify(owlConfigToJson(c), null, 2) + '\n'; }

/** Writes `dir/config.json` atomically. */
export function writeConfig(dir: string, c: OwlConfig): void {
  writeFileAtomic(join(dir, 'config.json'), owlConfigText(c));
}

// ---------------------------------------------------------------------------------------------------------------
// PEFT adapter_config.json (LoRA)

const adapterFields = z.looseObject({
  peft_type: z.string().default('LORA'),
  r: posInt.default(8),
  lora_alpha: z.number().positive().default(8),
  lora_dropout: z.number().min(0).max(1).default(0),
  // null: PEFT's default for llama, q_proj and v_proj; a string is a regex full-matched against module names.
  target_modules: z.union([z.array(z.string()), z.string()]).nullable().default(null),
  bias: z.enum(['none', 'all', 'lora_only']).default('none'),
  task_type: z.string().nullable().default(null),
  fan_in_fan_out: z.boolean().default(false),
  use_rslora: z.boolean().default(false),
  modules_to_save: z.array(z.string()).nullable().default(null),
  layers_to_transform: z.union([z.number().int(), z.array(z.number().int())]).nullable().default(null),
  inference_mode: z.boolean().default(false),
  init_lora_weights: z.union([z.boolean(), z.string()]).default(true),
  base_model_name_or_path: z.string().nullable().default(null),
});

export interface AdapterConfig {
  peftType: 'LORA';
  r: number;
  loraAlpha: number;
  loraDropout: number;
  targetModules: string[] | string;
  bias: 'none' | 'all' | 'lora_only';
  taskType: string | null;
  fanInFanOut: boolean;
  useRslora: boolean;
  modulesToSave: string[] | null;
  layersToTransform: number | number[] | null;
  inferenceMode: boolean;
  initLoraWeights: boolean | string;
  baseModelNameOrPath: string | null;
  extra: Record<string, unknown>;
}

/** The official stage-2 recipe (spec §3): r 8, alpha 32, dropout 0.05, q_proj and v_proj. */
export function defaultAdapterConfig(over: Partial<AdapterConfig> = {}): AdapterConfig {
  return { ...parseAdapterConfig({ r: 8, lora_alpha: 32, lora_dropout: 0.05, target_modules: ['q_proj', 'v_proj'] }), ...over };
}

export function parseAdapterConfig(json: unknown, file?: string): AdapterConfig {
  const c = split<AdapterConfig>(adapterFields, parseWith(adapterFields, json, '', file));
  if (c.peftType !== 'LORA') throw new ConfigError(`peft_type '${c.peftType}' is not supported (only LORA)`, file);
  if (c.fanInFanOut) throw new ConfigError('fan_in_fan_out adapters (Conv1D-style weights) are not supported', file);
  if (c.modulesToSave?.length) {
    throw new ConfigError(`modules_to_save ${JSON.stringify(c.modulesToSave)} (full module copies) is not supported`, file);
  }
  // PEFT options that change which modules are adapted or their scale: owlet has one r and one alpha for every
  // adapted module, so an adapter using them would load with the wrong numbers. Empty ones (PEFT writes {} and []) pass.
  const nonEmpty = (v: unknown) => v !== undefined && v !== null && v !== false &&
    !(Array.isArray(v) && v.length === 0) && !(typeof v === 'object' && !Array.isArray(v) && Object.keys(v as object).length === 0);
  for (const [k, what] of [['alpha_pattern', 'per-module lora_alpha'], ['rank_pattern', 'per-module r'],
    ['exclude_modules', 'modules excluded from target_modules'], ['use_dora', 'DoRA (weight-decomposed LoRA)']] as const) {
    if (nonEmpty(c.extra[k])) {
      throw new ConfigError(`${k} ${JSON.stringify(c.extra[k])} (${what}) is not supported: this adapter would be read with the wrong weights or scale`, file);
    }
  }
  c.targetModules ??= ['q_proj', 'v_proj'];
  if (typeof c.targetModules === 'string') { // PEFT reads a string as a regular expression over module names
    try { new RegExp(c.targetModules); } catch (e) {
      throw new ConfigError(`target_modules ${JSON.stringify(c.targetModules)} is not a valid regular expression (${(e as Error).message})`, file);
    }
  }
  return c;
}

/** PEFT's LoRA scaling: alpha / r (alpha / sqrt(r) with rsLoRA). */
export function loraScaling(c: AdapterConfig): number { return c.useRslora ? c.loraAlpha / Math.sqrt(c.r) : c.loraAlpha / c.r; }

export function adapterConfigToJson(c: AdapterConfig): Record<string, unknown> {
  return unsplit(c);
}

export function readAdapterConfig(dirOrFile: string): AdapterConfig {
  const file = dirOrFile.endsWith('.json') ? dirOrFile : join(dirOrFile, 'adapter_config.json');
  return parseAdapterConfig(readJson(file), file);
}

/** The text of adapter_config.json for `c`. */
export function adapterConfigText(c: AdapterConfig): string { return JSON.stringify(adapterConfigToJson(c), null, 2) + '\n'; }

export function writeAdapterConfig(dir: string, c: AdapterConfig): void {
  writeFileAtomic(join(dir, 'adapter_config.json'), adapterConfigText(c));
}
