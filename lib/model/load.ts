// Loading a model directory (config.json + weights in any supported layout) and an optional PEFT adapter into an
// MplugOwl, and converting a batch file in the official format into an OwlBatch.
import { ArgumentError, tensor, type Tensor } from '../tensor/index.ts';
import type { OwlBatch } from './batch.ts';
import { expectedKeys, parseLoraKey } from './io/keys.ts';
import { CheckpointError, ConfigError } from './io/errors.ts';
import { readConfig } from './io/config.ts';
import { loadCheckpoint, loadAdapter, readSafetensorsFile } from './io/index.ts';
import { MplugOwl } from './owl.ts';

export interface LoadModelOptions {
  adapterDir?: string | null;
  /** Storage dtype of the weights: f32 (the CPU backend computes in f32; bf16/f16 checkpoints are widened) or bf16
   *  (the CUDA backend's training dtype). */
  dtype?: 'f32' | 'bf16';
  /** Where the weights go: cpu (default), cuda or cuda:N. */
  device?: string;
}

/**
 * A model directory (config.json and its weights: model.safetensors or pytorch_model.bin, sharded or not, under the
 * official key names) as an MplugOwl, with a PEFT adapter (`adapterDir`: adapter_config.json + adapter_model.*) if given.
 * The model owns its weights (`model.params`): dispose them when done. Throws ConfigError or CheckpointError naming the
 * file and the problem (a missing tensor, a wrong shape, LoRA matrices in the base weights).
 */
export function loadModel(dir: string, o: LoadModelOptions = {}): MplugOwl {
  if (typeof dir !== 'string' || !dir) throw new ConfigError(`loadModel: the model directory must be a path, got ${JSON.stringify(dir) ?? String(dir)}`);
  const config = readConfig(dir);
  const expected = expectedKeys(config);
  // Tensors the model has no use for are not read; LoRA matrices among them are an error rather than a model that
  // silently runs without its adapter (a whole PEFT state dict given as the base).
  const filter = (name: string): boolean => {
    if (expected.has(name)) return true;
    if (parseLoraKey(name)) {
      throw new CheckpointError(`holds LoRA matrices (${name}): load them as an adapter (adapter_config.json + ` +
        'adapter_model.*, adapterDir) or merge them into the base weights first', { file: dir });
    }
    return false;
  };
  const params = loadCheckpoint(dir, { dtype: o.dtype ?? 'f32', device: o.device, expected, filter });
  let adapter = null;
  if (o.adapterDir) {
    let a: ReturnType<typeof loadAdapter>;
    try {
      a = loadAdapter(o.adapterDir, { dtype: 'f32', device: o.device, model: config });
    } catch (e) {
      for (const t of params.values()) t.dispose();  // the base weights are the caller's only if this returns
      throw e;
    }
    for (const [k, t] of a.tensors) params.set(k, t);
    adapter = a.config;
  }
  for (const [k, t] of params) t.name = k;
  return new MplugOwl(config, params, adapter);
}

const toF32 = (t: Tensor): Float32Array => t.toFloat32();
function toI32(t: Tensor): Int32Array {
  if (t.dtype === 'i64') {
    // (Int32Array.from would wrap 2^32 + 450 to 450 without a word)
    return Int32Array.from(t.data<'i64'>(), (v) => {
      if (v < -2147483648n || v > 2147483647n) throw new ArgumentError(`batch: ${t.name ?? 'an id tensor'} holds ${v}, outside the int32 range`, 'batch');
      return Number(v);
    });
  }
  if (t.dtype === 'i32') return t.data<'i32'>();
  return Int32Array.from(t.toFloat32());
}

/** The official batch tensors (pixel_values, input_ids, num_images, non_padding_mask, non_media_mask, prompt_mask). */
export function batchFromTensors(m: Map<string, Tensor>, source = 'batch', device = 'cpu'): OwlBatch {
  const need = (k: string) => {
    const t = m.get(k);
    if (!t) throw new ArgumentError(`${source}: the batch has no '${k}'`, 'batch');
    return t;
  };
  const ids = need('input_ids');
  if (ids.ndim !== 2) throw new ArgumentError(`${source}: input_ids must be [B, T], got ${ids.describe()}`, 'batch');
  const [B, T] = ids.shape;
  const masks = ['non_padding_mask', 'non_media_mask', 'prompt_mask'].map((k) => {
    const t = need(k);
    if (t.numel !== B * (T - 1)) throw new ArgumentError(`${source}: ${k} must be [${B}, ${T - 1}], got ${t.describe()}`, 'batch');
    return toF32(t);
  });
  const px = m.get('pixel_values');
  const numImages = m.has('num_images') ? toI32(need('num_images')) : new Int32Array(B);
  return {
    inputIds: toI32(ids), batchSize: B, seqLen: T, numImages,
    nonPaddingMask: masks[0], nonMediaMask: masks[1], promptMask: masks[2],
    pixelValues: px && px.numel > 0 ? (px.dtype === 'f32' && px.device === device ? px : tensor(px.toFloat32(), [...px.shape], { device })) : null,
  };
}

/** A batch file in the official training format (what `owlet dump --batch` reads) as an OwlBatch for model.forward. */
export function loadBatch(file: string, device = 'cpu'): OwlBatch {
  const { tensors } = readSafetensorsFile(file);
  const b = batchFromTensors(tensors, file, device);
  for (const t of tensors.values()) if (t !== b.pixelValues) t.dispose();
  return b;
}

export { expectedKeys };
