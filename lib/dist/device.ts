// One GPU per local rank, as torchrun scripts do with torch.cuda.set_device(LOCAL_RANK): the trainer's device
// resolution (lib/train/device.ts resolveDevice) takes cuda:localGpu(); the NCCL communicator is created on the device
// of the tensors it reduces and checked against it (process-group.ts).
import { DistributedError } from '../tensor/errors.ts';

type Env = Record<string, string | undefined>;

/** GPUs CUDA_VISIBLE_DEVICES leaves to this process, or undefined when it is not set. */
export function visibleGpus(env: Env = process.env): number | undefined {
  const v = env.CUDA_VISIBLE_DEVICES;
  if (v === undefined) return undefined;
  return v.trim() === '' ? 0 : v.split(',').filter((s) => s.trim() !== '').length;
}

/** The GPU index of a rank that takes one GPU per local rank: LOCAL_RANK, or 0 when CUDA_VISIBLE_DEVICES leaves it
 *  one GPU (srun --gpus-per-task=1 gives each task its own). */
export function localGpu(d: { rank: number; localRank: number }, env: Env = process.env): number {
  const visible = visibleGpus(env);
  if (visible === 1) return 0;
  if (visible !== undefined && d.localRank >= visible) {
    throw new DistributedError(`rank ${d.rank} has LOCAL_RANK ${d.localRank}, but CUDA_VISIBLE_DEVICES leaves ${visible} GPU(s) to ` +
      `this process: start at most ${visible} ranks per node (--nproc-per-node), one per GPU`, 'device');
  }
  return d.localRank;
}
