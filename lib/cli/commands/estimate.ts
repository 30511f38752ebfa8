// owlet estimate --config F: the memory one device needs for the stage a config describes.
import { gradAccumFor, loadConfig, modelSizes } from '../../train/config.ts';
import { cudaMemory, resolveDevice } from '../../train/device.ts';
import { estimateMemory, estimateStepFlops, formatEstimate } from '../../train/estimate.ts';
import { UsageError } from '../../train/errors.ts';
import type { CliIO } from '../io.ts';

export interface EstimateArgs { config: string; set: string[]; imagesPerSample: string; json?: boolean }

export function estimateCommand(a: EstimateArgs, io: CliIO): void {
  const images = a.imagesPerSample.trim() === '' ? NaN : Number(a.imagesPerSample); // ('' is not 0 images)
  if (!Number.isInteger(images) || images < 0) throw new UsageError(`--images-per-sample must be an integer >= 0, got '${a.imagesPerSample}'`);
  const c = loadConfig(a.config, a.set);
  const o = { sizes: modelSizes(c), train: c.stage.train, lora: c.stage.lora, dtype: c.model.dtype, microBatch: c.data.micro_batch,
    maxLength: c.data.max_length, imagesPerSample: images, recompute: c.model.gradient_checkpointing, gradAccum: gradAccumFor(c) };
  const e = estimateMemory(o);
  const flops = estimateStepFlops(o);
  const device = deviceLine(c.run.device, e.bytes.total);
  if (a.json) { io.out(JSON.stringify({ ...e, stepFlops: flops, device: device.json })); return; }
  io.out(formatEstimate(e, { stage: c.stage.id, train: c.stage.train, dtype: c.model.dtype, microBatch: c.data.micro_batch,
    recompute: c.model.gradient_checkpointing }));
  io.out(`model FLOPs per optimizer step (grad_accum ${gradAccumFor(c)}): ${flops.toExponential(3)}`);
  if (device.text) io.out(device.text);
}

/** The run's device here, and for a GPU whether the estimate fits its memory (as the driver reports it). */
function deviceLine(requested: string, total: number): { text?: string; json?: Record<string, unknown> } {
  if (requested === 'cpu') return {};
  let device: string;
  try {
    device = resolveDevice(requested);
  } catch (e) {
    return { text: `device: ${(e as Error).message}`, json: { requested, error: (e as Error).message } };
  }
  if (device === 'cpu') return { text: `device: cpu (run.device ${requested}: no usable GPU here)`, json: { requested, device } };
  const m = cudaMemory(device);
  if (!m) return { text: `device: ${device}`, json: { requested, device } };
  const gib = (b: number) => `${(b / 2 ** 30).toFixed(1)} GiB`;
  const verdict = total <= m.freeBytes ? 'the estimate fits' : `the estimate exceeds the free memory by ${gib(total - m.freeBytes)}`;
  return { text: `device: ${device} ${m.name}, ${gib(m.totalBytes)} (${gib(m.freeBytes)} free): ${verdict}`,
    json: { requested, device, name: m.name, totalBytes: m.totalBytes, freeBytes: m.freeBytes } };
}
