// The environment contract of a multi-process run, as torchrun defines it: RANK, LOCAL_RANK, WORLD_SIZE,
// LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT. `owlet launch` sets them; so do torchrun, and a SLURM script that maps
// SLURM_PROCID & co. onto them. Without WORLD_SIZE (or with WORLD_SIZE=1) a process trains alone.
//
// owlet's own knobs (all optional):
//   OWLET_DIST_TIMEOUT         seconds a collective may wait for the other ranks (default 1800, as torch's gloo)
//   OWLET_RENDEZVOUS_TIMEOUT   seconds to wait for every rank to arrive at the start (default 300)
//   OWLET_STORE_HOSTED=1       the launcher hosts the rendezvous store (owlet launch sets it); otherwise rank 0 does
//   OWLET_STORE_PORT           the store's port when rank 0 hosts it (default MASTER_PORT, or MASTER_PORT+1 under
//                              torchrun, whose agent already serves its own store on MASTER_PORT)
//   GLOO_SOCKET_IFNAME         network interface for the ranks' connections (default: the one that routes to MASTER_ADDR)
//   OWLET_DIST_OVERLAP=0       all-reduce the gradients after the backward instead of overlapped with it (default 1)
//   OWLET_DIST_BUCKET_MB       gradient bucket size in MB (default 25, as PyTorch DDP's bucket_cap_mb)
import { networkInterfaces } from 'node:os';
import { DistributedError } from '../tensor/errors.ts';

export interface DistEnv {
  rank: number;
  localRank: number;
  worldSize: number;
  localWorldSize: number;
  masterAddr: string;
  masterPort: number;
}

type Env = Record<string, string | undefined>;

function int(env: Env, name: string, min: number, max = Number.MAX_SAFE_INTEGER): number | undefined {
  const v = env[name];
  if (v === undefined || v === '') return undefined;
  const n = Number(v);
  if (!/^\d+$/.test(v.trim()) || !Number.isInteger(n) || n < min || n > max) {
    throw new DistributedError(`${name}=${v} is not an integer in [${min}, ${max}]`, 'env');
  }
  return n;
}

/**
 * The most ranks a run may have. gloo connects every rank to every other one (a socket per peer), and the native side
 * holds the world size in an int: a WORLD_SIZE of 2^32 + 2 became a world of 2 there while this side planned for
 * billions of ranks, and a world of 10^8 made the rendezvous allocate gigabytes of store keys.
 */
export const MAX_WORLD_SIZE = 65536;

/** A host name that means this machine over loopback (the store then listens on loopback only). */
export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || host.startsWith('127.');
}

/** The torchrun variables of this process, or null when it is not part of a multi-process run. */
export function readDistEnv(env: Env = process.env): DistEnv | null {
  const worldSize = int(env, 'WORLD_SIZE', 1, MAX_WORLD_SIZE);
  if (worldSize === 1 && env.RANK !== undefined && env.RANK.trim() !== '0') {
    // (a process told it is rank 1 of a world of 1: the launch is misconfigured, and running alone would train a
    // second copy of the run beside the one rank 0 trains)
    throw new DistributedError(`WORLD_SIZE=1 but RANK=${env.RANK}: a world of one process has only rank 0`, 'env');
  }
  if (worldSize === undefined || worldSize === 1) return null;
  const rank = int(env, 'RANK', 0, worldSize - 1);
  if (rank === undefined) throw new DistributedError(`WORLD_SIZE=${worldSize} but RANK is not set (start the ranks with owlet launch or torchrun)`, 'env');
  const localWorldSize = int(env, 'LOCAL_WORLD_SIZE', 1, worldSize) ?? worldSize;
  const localRank = int(env, 'LOCAL_RANK', 0, localWorldSize - 1) ?? rank % localWorldSize;
  const masterAddr = env.MASTER_ADDR?.trim();
  const masterPort = int(env, 'MASTER_PORT', 1, 65535);
  if (!masterAddr || masterPort === undefined) {
    throw new DistributedError(`WORLD_SIZE=${worldSize} needs MASTER_ADDR and MASTER_PORT (the address of node 0's rendezvous store)`, 'env');
  }
  return { rank, localRank, worldSize, localWorldSize, masterAddr, masterPort };
}

/**
 * GLOO_SOCKET_IFNAME, when set, checked against this machine's network interfaces before the rendezvous: a name
 * that is not one of them (a typo, another node's name, torch's comma-separated list) failed only after every rank
 * had arrived, with gloo's "ifa != nullptr. Unable to find address for: eth9".
 */
export function socketInterface(env: Env = process.env, interfaces: Record<string, unknown> = networkInterfaces()): string | undefined {
  const name = env.GLOO_SOCKET_IFNAME?.trim();
  if (!name) return undefined;
  if (Object.hasOwn(interfaces, name)) return name;
  const have = Object.keys(interfaces).sort().join(', ') || 'none with an address';
  throw new DistributedError(`GLOO_SOCKET_IFNAME=${env.GLOO_SOCKET_IFNAME}: this machine has no network interface of that name ` +
    `(it has: ${have}); give one of them, or unset it to use the one that routes to MASTER_ADDR`, 'env');
}

export interface DistTimeouts { rendezvousMs: number; opMs: number }

export function distTimeouts(env: Env = process.env): DistTimeouts {
  const seconds = (name: string, dflt: number) => {
    const v = env[name];
    if (v === undefined || v === '') return dflt * 1000;
    const n = Number(v);
    if (!Number.isFinite(n) || n <= 0) throw new DistributedError(`${name}=${v} is not a positive number of seconds`, 'env');
    // (the native side counts in nanoseconds: past ~9.2e9 s that overflowed and timed out at once)
    if (n > 1e8) throw new DistributedError(`${name}=${v} is more than 1e8 seconds (three years); give a smaller number`, 'env');
    return Math.max(1, Math.round(n * 1000));
  };
  return { rendezvousMs: seconds('OWLET_RENDEZVOUS_TIMEOUT', 300), opMs: seconds('OWLET_DIST_TIMEOUT', 1800) };
}

/** Where the store is and who hosts it: the launcher (OWLET_STORE_HOSTED=1), else rank 0 of this run. */
export function storeLocation(d: DistEnv, env: Env = process.env): { port: number; hostedHere: boolean } {
  if (env.OWLET_STORE_HOSTED === '1') return { port: d.masterPort, hostedHere: false };
  const underTorchrun = (env.TORCHELASTIC_USE_AGENT_STORE ?? '').toLowerCase() === 'true';
  const port = int(env, 'OWLET_STORE_PORT', 1, 65535) ?? (underTorchrun ? d.masterPort + 1 : d.masterPort);
  return { port, hostedHere: d.rank === 0 };
}

/**
 * In a rank started by `owlet launch`: exits when the launcher is gone (it was killed outright and could not stop its
 * ranks), so no rank outlives it. Checks twice a second whenever the event loop is free.
 */
export function exitWithLauncher(env: Env = process.env): void {
  const launcher = Number(env.OWLET_LAUNCHER_PID);
  if (!Number.isInteger(launcher) || launcher <= 0) return;
  const timer = setInterval(() => {
    if (process.ppid !== launcher) {
      process.stderr.write(`owlet: the launcher (pid ${launcher}) is gone; rank ${env.RANK ?? '?'} stops\n`);
      process.exit(1);
    }
  }, 500);
  timer.unref();
}

export interface GradientSyncSettings {
  /** All-reduce gradient buckets while the backward runs (default) or all after it. */
  overlap: boolean;
  /** Bytes per gradient bucket, or undefined for the group's default. */
  bucketBytes?: number;
}

/** OWLET_DIST_OVERLAP and OWLET_DIST_BUCKET_MB. */
export function gradientSyncSettings(env: Env = process.env): GradientSyncSettings {
  const o = (env.OWLET_DIST_OVERLAP ?? '').trim().toLowerCase();
  if (!['', '0', '1', 'true', 'false', 'on', 'off'].includes(o)) {
    throw new DistributedError(`OWLET_DIST_OVERLAP=${env.OWLET_DIST_OVERLAP} must be 1 or 0`, 'env');
  }
  const mb = env.OWLET_DIST_BUCKET_MB;
  let bucketBytes: number | undefined;
  if (mb !== undefined && mb !== '') {
    const n = Number(mb);
    if (!Number.isFinite(n) || n <= 0) throw new DistributedError(`OWLET_DIST_BUCKET_MB=${mb} is not a positive number of megabytes`, 'env');
    bucketBytes = Math.max(4, Math.round(n * 1024 * 1024));
  }
  return { overlap: !['0', 'false', 'off'].includes(o), bucketBytes };
}
