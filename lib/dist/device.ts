// Which device a rank trains on: one GPU per local rank, as torchrun scripts do with torch.cuda.set_device(LOCAL_RANK).
// The trainer's device resolution calls this with run.device; the NCCL communicator is then created on that GPU (the
// device of the tensors it reduces, see process-group.ts).
import { cudaAvailable } from '../native.ts';
import { DistributedError } from '../tensor/errors.ts';
import { readDistEnv } from './env.ts';

type Env = Record<string, string | undefined>;

/** GPUs CUDA_VISIBLE_DEVICES leaves to this process, or undefined when it is not set. */
export function visibleGpus(env: Env = process.env): number | undefined {
  const v = env.CUDA_VISIBLE_DEVICES;
  if (v === undefined) return undefined;
  return v.trim() === '' ? 0 : v.split(',').filter((s) => s.trim() !== '').length;
}

export interface RankDeviceOptions {
  /** Default process.env. */
  env?: Env;
  /** Whether 'auto' means a GPU here (default: the CUDA addon loads). */
  cudaUsable?: () => boolean;
}

/**
 * The device of this process for run.device `requested` (auto, cpu, cuda, cuda:N):
 * - alone (no torchrun variables): what was asked ('auto' becomes 'cuda' or 'cpu');
 * - a rank of a multi-process run asking for cuda or auto: cuda:LOCAL_RANK, or cuda:0 when CUDA_VISIBLE_DEVICES
 *   leaves it one GPU (srun --gpus-per-task=1 gives each task its own);
 * - an explicit cuda:N is kept with one rank per node and refused with several (they would share that GPU).
 */
export function rankDevice(requested: string, o: RankDeviceOptions = {}): string {
  const env = o.env ?? process.env;
  if (!/^(auto|cpu|cuda(:\d+)?)$/.test(requested)) {
    throw new DistributedError(`device '${requested}' must be auto, cpu, cuda or cuda:N`, 'device');
  }
  if (requested === 'cpu') return 'cpu';
  if (requested === 'auto' && !(o.cudaUsable ?? cudaAvailable)()) return 'cpu';
  const d = readDistEnv(env);
  if (!d) return requested === 'auto' ? 'cuda' : requested;
  if (requested.startsWith('cuda:')) {
    if (d.localWorldSize > 1) {
      throw new DistributedError(`device ${requested} names one GPU for all ${d.localWorldSize} ranks of this node; use cuda or auto, ` +
        'and each rank takes cuda:LOCAL_RANK', 'device');
    }
    return requested;
  }
  return `cuda:${localGpu(d, env)}`;
}

/** The GPU index of a rank that takes one GPU per local rank (see rankDevice). */
export function localGpu(d: { rank: number; localRank: number }, env: Env = process.env): number {
  const visible = visibleGpus(env);
  if (visible === 1) return 0;
  if (visible !== undefined && d.localRank >= visible) {
    throw new DistributedError(`rank ${d.rank} has LOCAL_RANK ${d.localRank}, but CUDA_VISIBLE_DEVICES leaves ${visible} GPU(s) to ` +
      `this process: start at most ${visible} ranks per node (--nproc-per-node), one per GPU`, 'device');
  }
  return d.localRank;
}
