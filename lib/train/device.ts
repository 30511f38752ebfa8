// Where a run trains: run.device (cpu | cuda | cuda:N | auto) resolved to one concrete device string. `auto` takes a
// GPU when the CUDA addon loads and sees one, else the CPU. A rank started by a launcher (owlet launch, torchrun:
// WORLD_SIZE > 1) takes the GPU of its LOCAL_RANK for `cuda` and `auto`, so the ranks of one node use one GPU each
// (unless CUDA_VISIBLE_DEVICES leaves the rank exactly one GPU: a scheduler bound it, and that one is cuda:0); an
// explicit cuda:N is taken as given (refused when several ranks of the node would share it). A request for CUDA that cannot be met fails here, naming why, before any
// weight is read.
import { localGpu } from '../dist/device.ts';
import { readDistEnv } from '../dist/env.ts';
import { cuda } from '../native.ts';
import { DeviceError } from '../tensor/errors.ts';

/** What the CUDA backend offers on this machine: visible GPUs, or why it cannot be used. */
export type CudaProbe = { devices: number; why?: undefined } | { devices: 0; why: string };

/** Loads the CUDA addon (if built) and counts the visible GPUs; never throws. No device context is created. */
export function probeCuda(): CudaProbe {
  let be;
  try {
    be = cuda();
  } catch (e) {
    return { devices: 0, why: (e as Error).message };
  }
  try {
    const n = be.deviceCount();
    return n > 0 ? { devices: n } : { devices: 0, why: 'the CUDA driver reports no GPU' };
  } catch (e) {
    return { devices: 0, why: (e as Error).message };
  }
}

export interface ResolveDeviceOptions {
  /** Environment of the launcher variables (default process.env). */
  env?: Record<string, string | undefined>;
  /** The CUDA probe (default probeCuda; tests inject one). */
  probe?: () => CudaProbe;
}

/** `cpu`, or `cuda:N` with N a visible GPU. Throws DeviceError when CUDA is asked for and cannot be used. */
export function resolveDevice(requested: string, o: ResolveDeviceOptions = {}): string {
  if (requested === 'cpu') return 'cpu';
  const m = /^(auto|cuda)(?::(\d+))?$/.exec(requested);
  if (!m || (m[1] === 'auto' && m[2] !== undefined)) {
    throw new DeviceError(`run.device '${requested}': must be auto, cpu, cuda or cuda:N`, 'device');
  }
  const probe = (o.probe ?? probeCuda)();
  if (m[1] === 'auto' && probe.devices === 0) return 'cpu';
  if (probe.devices === 0) {
    throw new DeviceError(`run.device '${requested}': the CUDA backend cannot be used here: ${probe.why} ` +
      '(use run.device: cpu, or auto to take a GPU only when there is one)', 'device');
  }
  const env = o.env ?? process.env;
  const dist = readDistEnv(env);
  if (m[2] !== undefined && dist && dist.localWorldSize > 1) {
    throw new DeviceError(`run.device '${requested}' names one GPU for all ${dist.localWorldSize} ranks of this node; use cuda or ` +
      'auto, and each rank takes cuda:LOCAL_RANK', 'device');
  }
  const rankGpu = (): number => {
    if (!dist) return 0;
    try { return localGpu(dist, env); } catch (e) { throw new DeviceError(`run.device '${requested}': ${(e as Error).message}`, 'device'); }
  };
  const index = m[2] !== undefined ? Number(m[2]) : rankGpu();
  if (index >= probe.devices) {
    const why = m[2] !== undefined ? `cuda:${index} was asked for` : `this rank's LOCAL_RANK is ${index}`;
    throw new DeviceError(`run.device '${requested}': ${why} but ${probe.devices} CUDA device(s) are visible ` +
      '(check CUDA_VISIBLE_DEVICES and --nproc-per-node)', 'device');
  }
  return `cuda:${index}`;
}

/** Name, total and free memory of a CUDA device as the driver reports them (cuda:0 only: the addon's info()). */
export function cudaMemory(device: string): { name: string; totalBytes: number; freeBytes: number } | null {
  if (device !== 'cuda:0' && device !== 'cuda') return null;
  try {
    const i = cuda().info() as { device?: string; memoryBytes?: number; memoryFreeBytes?: number };
    if (typeof i.memoryBytes !== 'number') return null;
    return { name: String(i.device ?? 'cuda:0'), totalBytes: i.memoryBytes, freeBytes: i.memoryFreeBytes ?? 0 };
  } catch {
    return null;
  }
}
