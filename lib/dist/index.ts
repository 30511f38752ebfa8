// Multi-process data parallelism: the process group (gloo on the CPU), torchrun's environment contract, and the
// launcher behind `owlet launch`.
export {
  readDistEnv, distTimeouts, socketInterface, MAX_WORLD_SIZE, storeLocation, exitWithLauncher, isLoopback, gradientSyncSettings, type DistEnv, type DistTimeouts,
  type GradientSyncSettings,
} from './env.ts';
export { localGpu, visibleGpus } from './device.ts';
export { GradientReducer, planBuckets, FIRST_BUCKET_BYTES, type BucketComm, type PendingSum } from './grad-reducer.ts';
export {
  initProcessGroup, currentProcessGroup, allReduceMean, broadcast, barrier, GlooProcessGroup, SingleProcessGroup,
  DEFAULT_BUCKET_BYTES, type ProcessGroup, type InitOptions,
} from './process-group.ts';
export { launch, LaunchError, type LaunchOptions } from './launch.ts';
