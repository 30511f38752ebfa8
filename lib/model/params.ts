// Every parameter of mPLUG-Owl under its official checkpoint key (spec §2.2), with its shape and how a fresh model
// initialises it (spec §4.7). LoRA parameters use PEFT's key names (spec §2.5).
import type { LoraConfig, OwlModelConfig } from './config.ts';
import { numPatches } from './config.ts';

export type Init = 'normal' | 'zeros' | 'ones' | 'trunc_normal' | 'kaiming_uniform';
export interface ParamSpec { name: string; shape: number[]; init: Init }

export function paramSpecs(c: OwlModelConfig): ParamSpec[] {
  const out: ParamSpec[] = [];
  const p = (name: string, shape: number[], init: Init) => out.push({ name, shape, init });
  const lin = (prefix: string, outF: number, inF: number, bias = true) => {
    p(`${prefix}.weight`, [outF, inF], 'normal');
    if (bias) p(`${prefix}.bias`, [outF], 'zeros');
  };
  const ln = (prefix: string, d: number) => { p(`${prefix}.weight`, [d], 'ones'); p(`${prefix}.bias`, [d], 'zeros'); };

  const v = c.vision_config, D = v.hidden_size;
  p('vision_model.embeddings.cls_token', [1, 1, D], 'trunc_normal');
  p('vision_model.embeddings.patch_embed.weight', [D, v.num_channels, v.patch_size, v.patch_size], 'normal');
  p('vision_model.embeddings.position_embedding', [1, numPatches(v) + 1, D], 'trunc_normal');
  ln('vision_model.embeddings.pre_layernorm', D);
  for (let i = 0; i < v.num_hidden_layers; i++) {
    const L = `vision_model.encoder.layers.${i}`;
    ln(`${L}.input_layernorm`, D);
    lin(`${L}.self_attn.query_key_value`, 3 * D, D);
    lin(`${L}.self_attn.dense`, D, D);
    ln(`${L}.post_attention_layernorm`, D);
    lin(`${L}.mlp.fc1`, v.intermediate_size, D);
    lin(`${L}.mlp.fc2`, D, v.intermediate_size);
  }
  ln('vision_model.post_layernorm', D);

  const a = c.visual_abstractor_config, A = a.hidden_size, Dt = c.text_config.hidden_size;
  p('query_tokens', [1, c.num_query_tokens, A], 'zeros');
  for (let i = 0; i < a.num_hidden_layers; i++) {
    const L = `abstractor.encoder.layers.${i}.crossattention`;
    ln(`${L}.norm1`, A);
    ln(`${L}.normk`, a.encoder_hidden_size);
    lin(`${L}.attention.query`, A, A);
    lin(`${L}.attention.key`, A, a.encoder_hidden_size);
    lin(`${L}.attention.value`, A, a.encoder_hidden_size);
    lin(`${L}.output.out_proj`, A, A);
    ln(`${L}.output.norm2`, A);
    lin(`${L}.output.mlp.w1`, a.intermediate_size, A);
    lin(`${L}.output.mlp.w3`, a.intermediate_size, A);
    ln(`${L}.output.mlp.ffn_ln`, a.intermediate_size);
    lin(`${L}.output.mlp.w2`, A, a.intermediate_size);
  }
  lin('abstractor.visual_fc', Dt, A);
  p('abstractor.vit_eos', [1, 1, Dt], 'trunc_normal');

  const t = c.text_config;
  p('language_model.model.embed_tokens.weight', [t.vocab_size, Dt], 'normal');
  for (let i = 0; i < t.num_hidden_layers; i++) {
    const L = `language_model.model.layers.${i}`;
    for (const n of ['q_proj', 'k_proj', 'v_proj', 'o_proj']) lin(`${L}.self_attn.${n}`, Dt, Dt, false);
    lin(`${L}.mlp.gate_proj`, t.intermediate_size, Dt, false);
    lin(`${L}.mlp.up_proj`, t.intermediate_size, Dt, false);
    lin(`${L}.mlp.down_proj`, Dt, t.intermediate_size, false);
    p(`${L}.input_layernorm.weight`, [Dt], 'ones');
    p(`${L}.post_attention_layernorm.weight`, [Dt], 'ones');
  }
  p('language_model.model.norm.weight', [Dt], 'ones');
  p('language_model.lm_head.weight', [t.vocab_size, Dt], 'normal');
  return out;
}

/** PEFT name of a LoRA matrix on a LLaMA linear (`q_proj`, `v_proj`, … or `gate_proj` etc. under mlp). */
export function loraKey(layer: number, module: string, which: 'A' | 'B'): string {
  const group = ['q_proj', 'k_proj', 'v_proj', 'o_proj'].includes(module) ? 'self_attn' : 'mlp';
  return `base_model.model.language_model.model.layers.${layer}.${group}.${module}.lora_${which}.weight`;
}

/** The base weight a LoRA pair adapts. */
export function loraBaseKey(layer: number, module: string): string {
  const group = ['q_proj', 'k_proj', 'v_proj', 'o_proj'].includes(module) ? 'self_attn' : 'mlp';
  return `language_model.model.layers.${layer}.${group}.${module}.weight`;
}

export function loraSpecs(c: OwlModelConfig, l: LoraConfig): ParamSpec[] {
  const t = c.text_config, out: ParamSpec[] = [];
  const dims: Record<string, [number, number]> = {
    q_proj: [t.hidden_size, t.hidden_size], k_proj: [t.hidden_size, t.hidden_size], v_proj: [t.hidden_size, t.hidden_size],
    o_proj: [t.hidden_size, t.hidden_size], gate_proj: [t.intermediate_size, t.hidden_size],
    up_proj: [t.intermediate_size, t.hidden_size], down_proj: [t.hidden_size, t.intermediate_size],
  };
  for (let i = 0; i < t.num_hidden_layers; i++) {
    for (const m of l.target_modules) {
      const d = dims[m];
      if (!d) throw new Error(`LoRA target module '${m}' is not a LLaMA linear (one of ${Object.keys(dims).join(', ')})`);
      out.push({ name: loraKey(i, m, 'A'), shape: [l.r, d[1]], init: 'kaiming_uniform' });
      out.push({ name: loraKey(i, m, 'B'), shape: [d[0], l.r], init: 'zeros' });
    }
  }
  return out;
}

/** Parameter groups a stage can train; membership is by key, so freezing is configuration, not code. */
export type ParamGroup = 'vision' | 'queries' | 'abstractor' | 'lora' | 'llm';
export function groupOf(key: string): ParamGroup {
  if (key.includes('.lora_')) return 'lora';
  if (key.startsWith('vision_model.')) return 'vision';
  if (key === 'query_tokens') return 'queries';
  if (key.startsWith('abstractor.')) return 'abstractor';
  return 'llm';
}

/** No weight decay on norms, biases, embeddings of queries and position/class embeddings (1-D or token tables). */
export function decays(key: string): boolean {
  if (key.endsWith('.bias') || key === 'query_tokens' || key.includes('norm') || key.includes('_ln')) return false;
  if (key.includes('position_embedding') || key.includes('cls_token') || key.includes('vit_eos')) return false;
  return true;
}
