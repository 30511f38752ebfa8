// The model's view of an mPLUG-Owl config: the official config.json field names (snake_case, as the released
// checkpoints spell them), with the spec's defaults filled in. lib/model/io parses and validates files into this.
export interface VisionConfig {
  hidden_size: number;
  intermediate_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  image_size: number;
  patch_size: number;
  num_channels: number;
  layer_norm_eps: number;
  attention_dropout: number;
}
export interface AbstractorConfig {
  hidden_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  intermediate_size: number;
  attention_probs_dropout_prob: number;
  layer_norm_eps: number;
  encoder_hidden_size: number;
}
export interface TextConfig {
  hidden_size: number;
  intermediate_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  vocab_size: number;
  rms_norm_eps: number;
  rope_theta: number;
  max_position_embeddings: number;
}
export interface OwlModelConfig {
  vision_config: VisionConfig;
  visual_abstractor_config: AbstractorConfig;
  text_config: TextConfig;
  num_query_tokens: number;
}
export interface LoraConfig {
  r: number;
  lora_alpha: number;
  lora_dropout: number;
  target_modules: string[];
}

/** Defaults of the released mPLUG-Owl-7B (spec §1.2–1.4) for fields a config omits. */
export const OWL_7B: OwlModelConfig = {
  vision_config: { hidden_size: 1024, intermediate_size: 4096, num_hidden_layers: 24, num_attention_heads: 16,
    image_size: 224, patch_size: 14, num_channels: 3, layer_norm_eps: 1e-6, attention_dropout: 0 },
  visual_abstractor_config: { hidden_size: 1024, num_hidden_layers: 6, num_attention_heads: 16, intermediate_size: 2816,
    attention_probs_dropout_prob: 0.1, layer_norm_eps: 1e-6, encoder_hidden_size: 1024 },
  text_config: { hidden_size: 4096, intermediate_size: 11008, num_hidden_layers: 32, num_attention_heads: 32,
    vocab_size: 32000, rms_norm_eps: 1e-6, rope_theta: 10000, max_position_embeddings: 2048 },
  num_query_tokens: 64,
};

/** Fills absent fields with the 7B defaults (a released config.json lists more fields; unknown ones are ignored). */
export function withDefaults(raw: Partial<{ [K in keyof OwlModelConfig]: Partial<OwlModelConfig[K]> }>): OwlModelConfig {
  const pick = <T extends object>(def: T, got: Partial<T> | undefined): T => {
    const out = { ...def };
    for (const k of Object.keys(def) as (keyof T)[]) if (got && got[k] !== undefined && got[k] !== null) out[k] = got[k] as T[keyof T];
    return out;
  };
  return {
    vision_config: pick(OWL_7B.vision_config, raw.vision_config),
    visual_abstractor_config: pick(OWL_7B.visual_abstractor_config, raw.visual_abstractor_config),
    text_config: pick(OWL_7B.text_config, raw.text_config),
    num_query_tokens: (raw.num_query_tokens as number | undefined) ?? OWL_7B.num_query_tokens,
  };
}

/** Tokens one image occupies in the LLM sequence: the queries plus vit_eos. */
export const mediaTokenLength = (c: OwlModelConfig): number => c.num_query_tokens + 1;
export const numPatches = (v: VisionConfig): number => (v.image_size / v.patch_size) ** 2;
