// owlet merge --checkpoint DIR [--adapter DIR] --out DIR [--dtype f32|bf16]: folds a LoRA adapter into its base weights
// (W ← W + (alpha/r)·B·A, in fp32 and rounded once, as PEFT's merge_and_unload) and writes a plain model directory —
// the form the released mPLUG-Owl checkpoints take (spec §2.1), loadable without PEFT.
import { copyFileSync, existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { loadModel, mergeLora } from '../../model/index.ts';
import { readConfig, TORCH_DTYPE_NAMES } from '../../model/io/config.ts';
import { saveCheckpoint } from '../../model/io/checkpoint.ts';
import { UsageError } from '../../train/errors.ts';
import type { CliIO } from '../io.ts';

export interface MergeArgs { checkpoint: string; adapter?: string; out: string; dtype?: 'f32' | 'bf16' }

export function mergeCommand(a: MergeArgs, io: CliIO): void {
  const dir = a.checkpoint;
  if (!existsSync(join(dir, 'config.json'))) throw new UsageError(`${dir}: no config.json (give a model directory, e.g. runs/x/final)`);
  const adapterDir = a.adapter ?? join(dir, 'adapter');
  if (!existsSync(join(adapterDir, 'adapter_config.json'))) throw new UsageError(`${adapterDir}: no adapter_config.json (nothing to merge; --adapter names another folder)`);
  if (resolve(a.out) === resolve(dir)) throw new UsageError('--out must be another folder than --checkpoint (the unmerged model stays as it is)');
  // Held in the dtype it was saved in (a bf16 7B model fits where its fp32 copy would not); the merge itself is fp32.
  const saved = readConfig(dir).extra.torch_dtype === TORCH_DTYPE_NAMES.bf16 ? 'bf16' : 'f32';
  const model = loadModel(dir, { adapterDir, dtype: saved });
  try {
    const merged = mergeLora(model.adapter!, model.params);
    const base = new Map([...model.params].filter(([k]) => !k.includes('.lora_')));
    const dtype = a.dtype ?? saved;
    saveCheckpoint(a.out, base, { config: model.config, dtype });
    for (const f of ['tokenizer.model', 'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'owlet.json']) {
      if (existsSync(join(dir, f))) copyFileSync(join(dir, f), join(a.out, f));
    }
    io.out(`merged the adapter into ${merged} module(s): ${a.out} (${dtype}, no adapter needed)`);
  } finally {
    for (const t of model.params.values()) t.dispose();
  }
}
