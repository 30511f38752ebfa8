// The integration seam between the trainer and the pieces built elsewhere (model, data, optimizer, tensor IO):
// trainStage() takes them as a Components object. owl-components.ts wires the real ones; tests pass small fakes.
import type { OwletConfig } from './config-schema.ts';
import type { OwlSizes } from './model-sizes.ts';
import type { Batch, DataStream, GradOps, Optimizer, DecayGroup, TensorFileIO, TrainableModel } from './types.ts';

export interface Components<B extends Batch = Batch> {
  /** Builds the model of the config (sizes, initial weights, dtype, device), in training mode. */
  createModel(config: OwletConfig, sizes: OwlSizes): Promise<TrainableModel<B>>;
  /** The training stream (split 'train') or an evaluation stream ('eval'), seeded from the config. */
  createData(config: OwletConfig, split: 'train' | 'eval', model: TrainableModel<B>): Promise<DataStream<B>>;
  createOptimizer(groups: DecayGroup[], o: OwletConfig['optimizer']): Optimizer;
  tensorIO: TensorFileIO;
  /** Gradient-wide reductions (default: the backend's fused sumSquares / scaleInplace). */
  gradOps?: GradOps;
  /** Optional: evaluation metrics on the eval split (loss, accuracy, …). */
  evaluate?(model: TrainableModel<B>, data: DataStream<B>, batches: number): Promise<Record<string, number>>;
  /** Optional: final exports (full model in the official layout, PEFT adapter) into `dir`. */
  exportFinal?(model: TrainableModel<B>, config: OwletConfig, dir: string): Promise<void>;
}
