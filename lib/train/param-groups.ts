// Stages as data: which parameters train (by group tag), and the optimizer's weight-decay groups.
import type { Tensor } from '../tensor/index.ts';
import { groupOf } from '../model/params.ts';
import type { GroupName } from './config-schema.ts';
import { ConfigError } from './errors.ts';
import type { LoraSpec, DecayGroup, TrainableModel } from './types.ts';

/** The group of an official checkpoint key (spec §2.2, §2.5). */
export function officialGroupOf(name: string): GroupName {
  const g = groupOf(name);
  if (g) return g;
  throw new ConfigError(`parameter '${name}' belongs to no known group (vision_model.*, query_tokens, abstractor.*, language_model.*, LoRA)`);
}

export interface StageSpec { train: readonly GroupName[]; lora?: LoraSpec }

/**
 * Applies a stage to a model: adds LoRA adapters when the stage trains them, then sets requiresGrad on exactly the
 * parameters of the listed groups. Returns the trainable parameters by name, in the model's order.
 */
export function applyStage(model: TrainableModel<never>, stage: StageSpec): Map<string, Tensor> {
  if (stage.train.includes('lora')) {
    if (!model.addLora) throw new ConfigError("stage.train includes 'lora' but this model cannot add LoRA adapters");
    if (!stage.lora) throw new ConfigError("stage.lora is required when stage.train includes 'lora'");
    const hasLora = [...model.parameters().keys()].some((n) => (model.groupOf ?? officialGroupOf)(n) === 'lora');
    if (!hasLora) model.addLora(stage.lora);
  }
  const groupOf = model.groupOf?.bind(model) ?? officialGroupOf;
  const wanted = new Set<string>(stage.train);
  const trainable = new Map<string, Tensor>();
  const seen = new Set<string>();
  for (const [name, t] of model.parameters()) {
    const g = groupOf(name);
    seen.add(g);
    t.requiresGrad = wanted.has(g);
    if (t.requiresGrad) trainable.set(name, t);
  }
  const missing = stage.train.filter((g) => !seen.has(g));
  if (missing.length) throw new ConfigError(`stage.train: the model has no parameters in group(s) ${missing.join(', ')}`);
  return trainable;
}

/** Splits trainables into a decayed and a non-decayed group (names matching any no_decay pattern). */
export function decayGroups(trainable: Map<string, Tensor>, weightDecay: number, noDecay: readonly string[]): DecayGroup[] {
  const res = noDecay.map((p) => new RegExp(p));
  const decay = new Map<string, Tensor>(), none = new Map<string, Tensor>();
  for (const [name, t] of trainable) (res.some((r) => r.test(name)) ? none : decay).set(name, t);
  const groups: DecayGroup[] = [];
  if (decay.size) groups.push({ name: 'decay', params: decay, weightDecay });
  if (none.size) groups.push({ name: 'no_decay', params: none, weightDecay: 0 });
  return groups;
}
