// owlet estimate --config F: the memory one device needs for the stage a config describes.
import { gradAccumFor, loadConfig, modelSizes } from '../../train/config.ts';
import { estimateMemory, estimateStepFlops, formatEstimate } from '../../train/estimate.ts';
import { UsageError } from '../../train/errors.ts';
import type { CliIO } from '../io.ts';

export interface EstimateArgs { config: string; set: string[]; imagesPerSample: string; json?: boolean }

export function estimateCommand(a: EstimateArgs, io: CliIO): void {
  const images = Number(a.imagesPerSample);
  if (!Number.isInteger(images) || images < 0) throw new UsageError(`--images-per-sample must be an integer >= 0, got '${a.imagesPerSample}'`);
  const c = loadConfig(a.config, a.set);
  const o = { sizes: modelSizes(c), train: c.stage.train, lora: c.stage.lora, dtype: c.model.dtype, microBatch: c.data.micro_batch,
    maxLength: c.data.max_length, imagesPerSample: images, recompute: c.model.gradient_checkpointing };
  const e = estimateMemory(o);
  const flops = estimateStepFlops({ ...o, gradAccum: gradAccumFor(c) });
  if (a.json) { io.out(JSON.stringify({ ...e, stepFlops: flops })); return; }
  io.out(formatEstimate(e, { stage: c.stage.id, train: c.stage.train, dtype: c.model.dtype, microBatch: c.data.micro_batch,
    recompute: c.model.gradient_checkpointing }));
  io.out(`model FLOPs per optimizer step (grad_accum ${gradAccumFor(c)}): ${flops.toExponential(3)}`);
}
