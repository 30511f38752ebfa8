// owlet's checkpoint formats: safetensors (single and sharded), torch.save zips (read only, no code execution),
// the official config.json and key names, PEFT adapters, and the HF CLIP/LLaMA → stage-1 conversion.
export { CheckpointError, ConfigError } from './errors.ts';
export type { TensorLoadOptions } from './bytes.ts';
export type { LoadOptions, TensorSource } from './source.ts';
export type { ExpectOptions } from './expect.ts';
export {
  SafetensorsFile, readSafetensorsFile, writeSafetensorsFile, readSafetensorsHeader,
  type SafetensorsEntry, type SafetensorsHeader, type SafetensorsSaveOptions,
} from './safetensors.ts';
export { saveSafetensors, readShardIndex, readShardedSafetensors, ShardedSource, type ShardIndex,
  type ShardedSaveOptions } from './sharded.ts';
export { TorchCheckpoint, readTorchFile } from './torch_pickle.ts';
export { loadCheckpoint, loadCheckpointDir, loadSafetensors, saveCheckpoint, openCheckpoint, openCheckpointFile,
  findCheckpoint, loadStage1FromPretrained } from './checkpoint.ts';
export {
  readConfig, writeConfig, parseOwlConfig, owlConfigToJson, validateOwlConfig, visionPositions, tokenizerMismatch,
  readAdapterConfig, writeAdapterConfig, parseAdapterConfig, adapterConfigToJson, defaultAdapterConfig, loraScaling,
  type OwlConfig, type VisionConfig, type AbstractorConfig, type TextConfig, type AdapterConfig,
} from './config.ts';
export { expectedKeys, expectedLoraKeys, linearModules, isLoraTarget, loraKey, parseLoraKey, canonicalKey,
  isIgnoredKey } from './keys.ts';
export { interleaveQkv, splitQkv, clipVisionToOwl, owlVisionToClip, llamaHfToOwl, owlToLlamaHf, llamaMetaToOwl,
  owlToLlamaMeta, stage1FromPretrained } from './convert.ts';
export { loadAdapter, saveAdapter, type Adapter, type AdapterLoadOptions } from './peft.ts';
