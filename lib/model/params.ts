// How a fresh model initialises each official key (spec §4.7), which parameter group a key belongs to (freezing is
// configuration), and which keys take weight decay. The key set itself comes from lib/model/io/keys.ts.
import type { AdapterConfig, OwlConfig } from './config.ts';
import { expectedKeys, expectedLoraKeys, parseLoraKey } from './io/keys.ts';

export type Init = 'normal' | 'zeros' | 'ones' | 'trunc_normal' | 'kaiming_uniform';
export interface ParamSpec { name: string; shape: number[]; init: Init }

/** Linear/conv/embedding weights N(0, std), biases 0, norm weights 1, cls/position/vit_eos truncated normal,
 *  query_tokens zeros (official), LoRA A kaiming-uniform and B zeros (PEFT). */
export function initRule(key: string, shape: readonly number[]): Init {
  const lora = parseLoraKey(key);
  if (lora) return lora.which === 'A' ? 'kaiming_uniform' : 'zeros';
  if (key === 'query_tokens') return 'zeros';
  if (key.endsWith('cls_token') || key.endsWith('position_embedding') || key.endsWith('vit_eos')) return 'trunc_normal';
  if (key.endsWith('.bias')) return 'zeros';
  if (shape.length === 1) return 'ones'; // LayerNorm / RMSNorm weights
  return 'normal';
}

export function paramSpecs(c: OwlConfig): ParamSpec[] {
  return [...expectedKeys(c)].map(([name, shape]) => ({ name, shape, init: initRule(name, shape) }));
}

export function loraSpecs(c: OwlConfig, a: AdapterConfig): ParamSpec[] {
  return [...expectedLoraKeys(c, a)].map(([name, shape]) => ({ name, shape, init: initRule(name, shape) }));
}

/** Parameter groups a stage can train; membership is by key, so freezing is configuration, not code. */
export const PARAM_GROUPS = ['vision', 'queries', 'abstractor', 'llm', 'lora'] as const;
export type GroupName = (typeof PARAM_GROUPS)[number];
/** The group of an official checkpoint key (spec §2.2, §2.5); undefined for a key of no known part. */
export function groupOf(key: string): GroupName | undefined {
  if (/(^|\.)lora_[AB](\.|$)/.test(key)) return 'lora';
  if (key.startsWith('vision_model.')) return 'vision';
  if (key === 'query_tokens') return 'queries';
  if (key.startsWith('abstractor.')) return 'abstractor';
  if (key.startsWith('language_model.')) return 'llm';
  return undefined;
}
