// Finding and loading a checkpoint wherever it is: a file (safetensors or torch.save zip, told apart by their first
// bytes), a shard index, or a directory holding any of HF's four layouts. Names come out canonical (keys.ts).
import { closeSync, existsSync, mkdirSync, openSync, readSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { Tensor } from '../../tensor/index.ts';
import { commitStaged, discardStaged, stageData, type StagedFile } from './atomic.ts';
import { owlConfigText, TORCH_DTYPE_NAMES, type OwlConfig } from './config.ts';
import { stage1FromPretrained } from './convert.ts';
import { CheckpointError } from './errors.ts';
import { canonicalKey } from './keys.ts';
import { SafetensorsFile } from './safetensors.ts';
import { saveSafetensors, ShardedSource, type ShardedSaveOptions } from './sharded.ts';
import { readFromSource, type LoadOptions, type TensorSource } from './source.ts';
import { TorchCheckpoint } from './torch_pickle.ts';

/** HF's search order inside a model directory. */
export const CHECKPOINT_FILES = ['model.safetensors', 'model.safetensors.index.json', 'pytorch_model.bin',
  'pytorch_model.bin.index.json'] as const;

/** The checkpoint file in `dir` (first of CHECKPOINT_FILES that exists), or a typed error listing what was looked for. */
export function findCheckpoint(dir: string, files: readonly string[] = CHECKPOINT_FILES): string {
  for (const f of files) if (existsSync(join(dir, f))) return join(dir, f);
  throw new CheckpointError(`no checkpoint found (looked for ${files.join(', ')})`, { file: dir });
}

function isZip(path: string): boolean {
  const fd = openSync(path, 'r');
  try {
    const b = new Uint8Array(2);
    return readSync(fd, b, 0, 2, 0) === 2 && b[0] === 0x50 && b[1] === 0x4b;
  } finally {
    closeSync(fd);
  }
}

/** Opens one checkpoint file: safetensors, torch.save zip, or a `.index.json` over shards of either. */
export function openCheckpointFile(path: string): TensorSource {
  if (!existsSync(path)) throw new CheckpointError('not found', { file: path });
  // (not a regular file: a folder fails with EISDIR, and a FIFO would block the open forever)
  if (!statSync(path).isFile()) throw new CheckpointError('is not a regular file', { file: path });
  if (path.endsWith('.index.json')) return ShardedSource.open(path, openCheckpointFile);
  const legacyTorch = path.endsWith('.bin') || path.endsWith('.pt') || path.endsWith('.pth');
  return isZip(path) || legacyTorch ? TorchCheckpoint.open(path) : SafetensorsFile.open(path);
}

/** Opens a checkpoint given as a file or a directory. Close it when done. */
export function openCheckpoint(pathOrDir: string): TensorSource {
  const p = existsSync(pathOrDir) && statSync(pathOrDir).isDirectory() ? findCheckpoint(pathOrDir) : pathOrDir;
  return openCheckpointFile(p);
}

function withSource<T>(src: TensorSource, f: (s: TensorSource) => T): T {
  try {
    return f(src);
  } finally {
    src.close();
  }
}

/**
 * Loads a checkpoint (file or directory, any layout) under canonical in-memory names: official keys for base weights,
 * PEFT names for LoRA (Trainer `.default.` spellings and `base_model.model.` prefixes normalised), rotary buffers
 * skipped unread. `expected`/`filter` see the canonical names.
 */
export function loadCheckpoint(pathOrDir: string, opts: LoadOptions = {}): Map<string, Tensor> {
  return withSource(openCheckpoint(pathOrDir), (s) => readFromSource(s, opts, canonicalKey));
}
export const loadCheckpointDir = loadCheckpoint;

/** Loads safetensors (a file, an index, or a directory) with the names exactly as stored. */
export function loadSafetensors(pathOrDir: string, opts: LoadOptions = {}): Map<string, Tensor> {
  const isDir = existsSync(pathOrDir) && statSync(pathOrDir).isDirectory();
  const p = isDir ? findCheckpoint(pathOrDir, ['model.safetensors', 'model.safetensors.index.json']) : pathOrDir;
  const src = p.endsWith('.index.json') ? ShardedSource.open(p, (f) => SafetensorsFile.open(f)) : SafetensorsFile.open(p);
  return withSource(src, (s) => readFromSource(s, opts));
}

/**
 * Writes a model directory as transformers' save_pretrained does: `model.safetensors` (sharded with an index above
 * `maxShardBytes`) whose files carry {"format": "pt"} (transformers before 4.30 reads that field without a guard and
 * fails on a file without it), and, when given, `config.json` with the dtype written (`torch_dtype`) and the model
 * class (`architectures`). Every file is written atomically. Returns the files written.
 */
export function saveCheckpoint(dir: string, tensors: ReadonlyMap<string, Tensor>,
  opts: ShardedSaveOptions & { config?: OwlConfig } = {}): string[] {
  mkdirSync(dir, { recursive: true });
  // config.json is staged before the weights are written and moved into place right after them: a save that fails
  // leaves the old pair, never new weights beside an old config that describes another model.
  let config: StagedFile | undefined;
  if (opts.config) {
    const first = tensors.values().next().value as Tensor | undefined;
    const dtype = opts.dtype ?? first?.dtype ?? 'f32';
    const torchDtype = TORCH_DTYPE_NAMES[dtype as keyof typeof TORCH_DTYPE_NAMES] ?? 'float32';
    config = stageData(join(dir, 'config.json'), owlConfigText({ ...opts.config,
      extra: { architectures: ['MplugOwlForConditionalGeneration'], ...opts.config.extra, torch_dtype: torchDtype } }));
  }
  let files: string[];
  try {
    files = saveSafetensors(join(dir, 'model.safetensors'), tensors, { ...opts, metadata: { format: 'pt', ...opts.metadata } });
  } catch (e) {
    if (config) discardStaged([config]);
    throw e;
  }
  if (config) {
    commitStaged(config);
    files.push(config.path);
  }
  return files;
}

/**
 * Stage-1 initial weights from an HF CLIP checkpoint (CLIPVisionModel or CLIPModel; only `vision_model.*` is read)
 * and an HF or Meta LLaMA checkpoint, as official keys shape-checked against `config`. `missing` lists the tensors
 * the model must initialise itself (query_tokens and the abstractor).
 */
export function loadStage1FromPretrained(config: OwlConfig, clipPathOrDir: string, llamaPathOrDir: string,
  opts: Pick<LoadOptions, 'dtype' | 'device'> = {}): { tensors: Map<string, Tensor>; missing: string[] } {
  const clip = withSource(openCheckpoint(clipPathOrDir), (s) =>
    readFromSource(s, { ...opts, filter: (n) => n.startsWith('vision_model.') && !n.endsWith('position_ids') }));
  try {
    const llama = withSource(openCheckpoint(llamaPathOrDir), (s) =>
      readFromSource(s, { ...opts, filter: (n) => !n.endsWith('rotary_emb.inv_freq') && n !== 'rope.freqs' }));
    try {
      return stage1FromPretrained(config, clip, llama);
    } finally {
      for (const t of llama.values()) t.dispose(); // converted tensors are views or copies: sources can go
    }
  } finally {
    for (const t of clip.values()) t.dispose();
  }
}
