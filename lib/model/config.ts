// The model reads the validated configs of lib/model/io (official config.json / adapter_config.json, camelCase).
import type { OwlConfig, VisionConfig } from './io/config.ts';
export type { OwlConfig, VisionConfig, AbstractorConfig, TextConfig, AdapterConfig } from './io/config.ts';
export { parseOwlConfig, parseAdapterConfig, defaultAdapterConfig, loraScaling } from './io/config.ts';

/** Tokens one image occupies in the LLM sequence: the queries plus vit_eos. */
export const mediaTokenLength = (c: OwlConfig): number => c.mediaTokenLength;
export const numPatches = (v: VisionConfig): number => (v.imageSize / v.patchSize) ** 2;
