// The integration seam between the trainer and the pieces built elsewhere (model, data, optimizer, tensor IO).
// trainStage() takes them as a Components object; loadComponents() finds the real ones in this build and says
// exactly which are missing. The expected module paths and export names are listed in PIECES.
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { OwletConfig } from './config-schema.ts';
import { NotAvailableError } from './errors.ts';
import type { OwlSizes } from './model-sizes.ts';
import type { Batch, DataStream, GradOps, Optimizer, ParamGroup, TensorFileIO, TrainableModel } from './types.ts';

export interface Components<B extends Batch = Batch> {
  /** Builds the model of the config (sizes, initial weights, dtype, device), in training mode. */
  createModel(config: OwletConfig, sizes: OwlSizes): Promise<TrainableModel<B>>;
  /** The training stream (split 'train') or an evaluation stream ('eval'), seeded from the config. */
  createData(config: OwletConfig, split: 'train' | 'eval', model: TrainableModel<B>): Promise<DataStream<B>>;
  createOptimizer(groups: ParamGroup[], o: OwletConfig['optimizer']): Optimizer;
  tensorIO: TensorFileIO;
  /** Gradient-wide reductions (default: the backend's fused sumSquares / scaleInplace). */
  gradOps?: GradOps;
  /** Optional: evaluation metrics on the eval split (loss, accuracy, …). */
  evaluate?(model: TrainableModel<B>, data: DataStream<B>, batches: number): Promise<Record<string, number>>;
  /** Optional: final exports (full model in the official layout, PEFT adapter) into `dir`. */
  exportFinal?(model: TrainableModel<B>, config: OwletConfig, dir: string): Promise<void>;
}

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

/** What each piece is expected to export, by module (relative to lib/). */
export const PIECES = {
  model: { module: 'model/index.ts', export: 'createTrainableModel', what: 'the mPLUG-Owl model (lib/model)' },
  data: { module: 'data/index.ts', export: 'createDataStream', what: 'the data pipeline (lib/data)' },
  optimizer: { module: 'tensor/ops/optim.ts', export: 'AdamW', what: 'the AdamW optimizer (lib/tensor/ops/optim)' },
  io: { module: 'model/io/index.ts', export: 'safetensorsIO', what: 'safetensors IO (lib/model/io)' },
  generate: { module: 'generate/index.ts', export: 'generate', what: 'generation (lib/generate)' },
  evaluate: { module: 'generate/index.ts', export: 'evaluateOwl', what: 'OwlEval answering (lib/generate)' },
  dump: { module: 'model/index.ts', export: 'dumpActivations', what: 'activation dumps (lib/model)' },
  lint: { module: 'data/index.ts', export: 'lintData', what: 'the data linter (lib/data)' },
  launch: { module: 'dist/index.ts', export: 'launch', what: 'the multi-process launcher (lib/dist)' },
  demo: { module: 'demo/index.ts', export: 'runDemo', what: 'the built-in demo (lib/demo)' },
} as const;
export type PieceName = keyof typeof PIECES;

/** The export a piece provides, or NotAvailableError naming what is missing. */
export async function requirePiece<T>(name: PieceName, forWhat: string): Promise<T> {
  const p = PIECES[name];
  const file = join(root, p.module);
  if (!existsSync(file)) throw new NotAvailableError(`${forWhat}: not yet available in this build (needs ${p.what}: lib/${p.module} is missing)`);
  const mod = (await import(pathToFileURL(file).href)) as Record<string, unknown>;
  if (!(p.export in mod)) throw new NotAvailableError(`${forWhat}: not yet available in this build (lib/${p.module} does not export ${p.export})`);
  return mod[p.export] as T;
}

/** The real components of this build; throws NotAvailableError listing every missing piece. */
export async function loadComponents(forWhat: string): Promise<Components> {
  const missing: string[] = [];
  const get = async <T>(n: PieceName): Promise<T | undefined> => {
    try { return await requirePiece<T>(n, forWhat); } catch (e) {
      if (e instanceof NotAvailableError) { missing.push(PIECES[n].what); return undefined; }
      throw e;
    }
  };
  const createModel = await get<Components['createModel']>('model');
  const createData = await get<Components['createData']>('data');
  const AdamW = await get<new (groups: ParamGroup[], o: OwletConfig['optimizer']) => Optimizer>('optimizer');
  const io = await get<TensorFileIO>('io');
  if (missing.length) throw new NotAvailableError(`${forWhat}: not yet available in this build (needs ${missing.join(', ')})`);
  return { createModel: createModel!, createData: createData!, createOptimizer: (g, o) => new AdamW!(g, o), tensorIO: io! };
}
