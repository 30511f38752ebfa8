// The training layer's public surface (re-exported by owlet's lib/index.ts).
export * from './types.ts';
export * from './errors.ts';
export { makeSchedule, type Schedule, type ScheduleOptions, type ScheduleType } from './schedule.ts';
export { OwletConfig, GROUPS, type GroupName, type OwletConfigInput } from './config-schema.ts';
export { loadConfig, validateConfig, parseConfigText, parseOverride, applyOverride, modelSizes, totalSteps } from './config.ts';
export { OwlSizes, PRESETS, readSizes } from './model-sizes.ts';
export { Rng, type RngState } from './rng.ts';
export { CheckpointManager, resolveResume, verifyCheckpoint, isCheckpointDir, type CheckpointPayload, type LoadedCheckpoint } from './checkpoint.ts';
export { applyStage, decayGroups, officialGroupOf } from './param-groups.ts';
export { nativeGradOps, clipGlobalNorm, zeroGrads } from './grad-ops.ts';
export { Trainer, type TrainerOptions, type TrainResult, type SkippedStep } from './trainer.ts';
export { trainStage, type TrainStageOptions, type StageResult } from './stage.ts';
export { loadComponents, requirePiece, type Components } from './components.ts';
export { IntervalMeter, MetricsWriter, formatRecord, readRecords, type LogRecord, type StepStats } from './metrics.ts';
export { TensorBoardWriter } from './tensorboard.ts';
export { writePlots, lineChartSvg } from './plots.ts';
export { Progress } from './progress.ts';
export { countParams, estimateMemory, estimateStepFlops, formatEstimate, type MemoryEstimate } from './estimate.ts';
