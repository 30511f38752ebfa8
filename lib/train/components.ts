// The integration seam between the trainer and the pieces built elsewhere (model, data, optimizer, tensor IO):
// trainStage() takes them as a Components object. owl-components.ts wires the real ones; tests pass small fakes.
import type { OwletConfig } from './config-schema.ts';
import type { OwlSizes } from './model-sizes.ts';
import type { Batch, Collectives, DataStream, GradOps, Optimizer, DecayGroup, TensorFileIO, TrainableModel } from './types.ts';

export interface Components<B extends Batch = Batch> {
  /** Builds the model of the config (sizes, initial weights, dtype, device), in training mode. */
  createModel(config: OwletConfig, sizes: OwlSizes): Promise<TrainableModel<B>>;
  /** The training stream (split 'train') or an evaluation stream ('eval'), seeded from the config; `shard` is this
   *  process's rank in a data-parallel run (the training stream interleaves ranks, see ShardOptions.chunk). */
  createData(config: OwletConfig, split: 'train' | 'eval', model: TrainableModel<B>, shard?: { rank: number; worldSize: number }): Promise<DataStream<B>>;
  createOptimizer(groups: DecayGroup[], o: OwletConfig['optimizer']): Optimizer;
  tensorIO: TensorFileIO;
  /** Gradient-wide reductions (default: the backend's fused sumSquares / scaleInplace). */
  gradOps?: GradOps;
  /** Optional: evaluation metrics on the eval split (loss, accuracy, …); with several ranks, each evaluates its
   *  shard and combines the sums through `dist` (every rank calls it). */
  evaluate?(model: TrainableModel<B>, data: DataStream<B>, batches: number, dist?: Collectives): Promise<Record<string, number>>;
  /** Optional: final exports (full model in the official layout, PEFT adapter) into `dir`. */
  exportFinal?(model: TrainableModel<B>, config: OwletConfig, dir: string): Promise<void>;
}
