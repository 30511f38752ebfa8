// PEFT LoRA adapters: `adapter_config.json` + `adapter_model.safetensors` (or PEFT's older `adapter_model.bin`).
// In memory the LoRA matrices keep their PEFT names (`base_model.model.<module>.lora_{A,B}.weight`); Trainer
// spellings (`.lora_A.default.weight`) are accepted on load and never written.
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { Tensor } from '../../tensor/index.ts';
import { findCheckpoint, openCheckpointFile } from './checkpoint.ts';
import { commitStaged, discardStaged, stageData } from './atomic.ts';
import { adapterConfigText, readAdapterConfig, type AdapterConfig, type OwlConfig } from './config.ts';
import { CheckpointError, ConfigError } from './errors.ts';
import { canonicalKey, expectedLoraKeys, loraKey, parseLoraKey } from './keys.ts';
import { stageSafetensorsFile } from './safetensors.ts';
import { readFromSource, type LoadOptions } from './source.ts';

export interface Adapter {
  config: AdapterConfig;
  /** PEFT name → tensor (A: [r, in], B: [out, r]). */
  tensors: Map<string, Tensor>;
}

export interface AdapterLoadOptions extends Pick<LoadOptions, 'dtype' | 'device'> {
  /** With the model config, every LoRA tensor the adapter config implies must be present with its exact shape. */
  model?: OwlConfig;
}

export const ADAPTER_FILES = ['adapter_model.safetensors', 'adapter_model.bin'];

export function loadAdapter(dir: string, opts: AdapterLoadOptions = {}): Adapter {
  const config = readAdapterConfig(dir);
  const file = findCheckpoint(dir, ADAPTER_FILES);
  const src = openCheckpointFile(file);
  let tensors: Map<string, Tensor>;
  try {
    // Check the rank of every matrix against the config from the table of contents, before reading data.
    for (const raw of src.names) {
      const lora = parseLoraKey(raw);
      const s = src.shapeOf(raw);
      if (lora && (s.length !== 2 || (lora.which === 'A' ? s[0] : s[1]) !== config.r)) {
        throw new CheckpointError(`has shape [${s.join(', ')}], which does not have rank r = ${config.r} from ` +
          'adapter_config.json', { file, tensor: raw });
      }
    }
    let expected: Map<string, number[]> | undefined;
    try {
      expected = opts.model ? expectedLoraKeys(opts.model, config) : undefined;
    } catch (e) { // (a target_modules regex that never finishes: name the file it came from)
      throw e instanceof ConfigError ? new ConfigError(e.message, join(dir, 'adapter_config.json')) : e;
    }
    // (PEFT raises the same: an adapter whose target_modules / layers_to_transform match nothing would load as no LoRA)
    if (expected && expected.size === 0) {
      throw new CheckpointError(`target_modules ${JSON.stringify(config.targetModules)}` +
        (config.layersToTransform != null ? ` with layers_to_transform ${JSON.stringify(config.layersToTransform)}` : '') +
        ' match no module of the model', { file: join(dir, 'adapter_config.json') });
    }
    tensors = readFromSource(src, { dtype: opts.dtype, device: opts.device, expected, strict: !!opts.model }, canonicalKey);
  } finally {
    src.close();
  }
  return { config, tensors };
}

/**
 * Writes `dir/adapter_model.safetensors` (PEFT names) and `dir/adapter_config.json` as a pair: both are staged in full
 * before either replaces its old file, so a failed save never leaves new weights beside the old config (whose
 * lora_alpha would then scale them wrongly without a word).
 */
export function saveAdapter(dir: string, tensors: ReadonlyMap<string, Tensor>, config: AdapterConfig): string[] {
  const out: [string, Tensor][] = [];
  for (const [name, t] of tensors) {
    const lora = parseLoraKey(name);
    const key = lora ? loraKey(lora.module, lora.which) : canonicalKey(name);
    if (!lora && config.bias === 'none') {
      throw new CheckpointError('is not a LoRA matrix (and the adapter config has bias "none")', { tensor: name });
    }
    if (lora && (t.shape.length !== 2 || (lora.which === 'A' ? t.shape[0] : t.shape[1]) !== config.r)) {
      throw new CheckpointError(`has shape [${t.shape.join(', ')}], not rank r = ${config.r}`, { tensor: name });
    }
    out.push([lora ? key! : `base_model.model.${key}`, t]);
  }
  if (!existsSync(dir)) mkdirSync(dir, { recursive: true });
  const model = join(dir, 'adapter_model.safetensors'), configFile = join(dir, 'adapter_config.json');
  const staged = [stageData(configFile, adapterConfigText(config))];
  try {
    staged.unshift(stageSafetensorsFile(model, out, { metadata: { format: 'pt' } }));
    for (const s of staged) commitStaged(s);
  } catch (e) {
    discardStaged(staged);
    throw e;
  }
  return [model, configFile];
}
