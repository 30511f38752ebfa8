// Model sizes in the official config.json field names (spec §2.1), enough to count parameters and estimate memory.
// lib/model owns the full model config; this is the subset the training layer reasons about before any weight exists.
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { ConfigError } from './errors.ts';

const positiveInt = z.number().int().positive();

export const VisionSizes = z.looseObject({
  hidden_size: positiveInt,
  intermediate_size: positiveInt,
  num_hidden_layers: positiveInt,
  num_attention_heads: positiveInt,
  image_size: positiveInt.default(224),
  patch_size: positiveInt.default(14),
  num_channels: positiveInt.default(3),
});
export const AbstractorSizes = z.looseObject({
  hidden_size: positiveInt,
  intermediate_size: positiveInt,
  num_hidden_layers: positiveInt,
  num_attention_heads: positiveInt,
  encoder_hidden_size: positiveInt.optional(),
});
export const TextSizes = z.looseObject({
  hidden_size: positiveInt,
  intermediate_size: positiveInt,
  num_hidden_layers: positiveInt,
  num_attention_heads: positiveInt,
  vocab_size: positiveInt,
});
export const OwlSizes = z.looseObject({
  vision_config: VisionSizes,
  visual_abstractor_config: AbstractorSizes,
  text_config: TextSizes,
  num_query_tokens: positiveInt.default(64),
});
export type OwlSizes = z.infer<typeof OwlSizes>;

/** The released mPLUG-Owl LLaMA-7B sizes (spec §1.2–1.4, §2.2). */
export const PRESETS = {
  'mplug-owl-llama-7b': {
    num_query_tokens: 64,
    vision_config: { hidden_size: 1024, intermediate_size: 4096, num_hidden_layers: 24, num_attention_heads: 16,
      image_size: 224, patch_size: 14, num_channels: 3 },
    visual_abstractor_config: { hidden_size: 1024, intermediate_size: 2816, num_hidden_layers: 6,
      num_attention_heads: 16, encoder_hidden_size: 1024 },
    text_config: { hidden_size: 4096, intermediate_size: 11008, num_hidden_layers: 32, num_attention_heads: 32,
      vocab_size: 32000 },
  },
} as const satisfies Record<string, OwlSizes>;
export type PresetName = keyof typeof PRESETS;
export const PRESET_NAMES = Object.keys(PRESETS) as PresetName[];

/** Reads sizes from a checkpoint directory (its config.json) or a config.json file. */
export function readSizes(path: string): OwlSizes {
  let file = path;
  try {
    if (statSync(path).isDirectory()) file = join(path, 'config.json');
  } catch {
    throw new ConfigError(`model.config: no such file or directory '${path}'`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw new ConfigError(`model.config: cannot read '${file}': ${(e as Error).message}`);
  }
  const r = OwlSizes.safeParse(raw);
  if (!r.success) {
    const i = r.error.issues[0];
    throw new ConfigError(`model.config: '${file}' ${i.path.join('.') || '(top)'}: ${i.message}`);
  }
  return r.data;
}
