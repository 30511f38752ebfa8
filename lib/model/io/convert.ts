// Key and layout conversions between mPLUG-Owl's official names and the separate checkpoints stage 1 starts from
// (spec §2.3–2.4): HF CLIPVisionModel (separate q/k/v → the per-head interleaved `query_key_value`), HF
// LlamaForCausalLM (same names under `language_model.`), and Meta's original LLaMA names (whose q/k rows use the
// interleaved-pair RoPE layout and are permuted into HF's rotate-half layout). Renamed tensors are views on the
// source storage (no copy); only the fused QKV and permuted q/k are new tensors. Works for any dtype and device.
import { concat, gatherRows, scope, slice, tensor, type Tensor } from '../../tensor/index.ts';
import type { OwlConfig } from './config.ts';
import { CheckpointError } from './errors.ts';
import { expectedKeys } from './keys.ts';

type Tensors = ReadonlyMap<string, Tensor>;

function need(src: Tensors, key: string, from: string): Tensor {
  const t = src.get(key);
  if (!t) throw new CheckpointError(`missing from the ${from} checkpoint`, { tensor: key });
  return t;
}

/**
 * The fused projection of §2.4: output channel h·3d + t·d + j is row h·d + j of q (t=0), k (t=1) or v (t=2).
 * Viewing each of q, k, v as [heads, d·rest] and concatenating along axis 1 produces exactly that order.
 */
export function interleaveQkv(q: Tensor, k: Tensor, v: Tensor, heads: number): Tensor {
  const rows = q.shape[0];
  if (rows % heads) throw new CheckpointError(`q has ${rows} rows, not divisible by ${heads} heads`);
  for (const [n, x] of [['k', k], ['v', v]] as const) {
    if (x.shape.length !== q.shape.length || x.shape.some((d, i) => d !== q.shape[i])) {
      throw new CheckpointError(`${n} has shape [${x.shape.join(', ')}] but q has [${q.shape.join(', ')}]`);
    }
  }
  return scope(() => {
    const per = q.numel / heads;
    const fused = concat([q, k, v].map((x) => x.share([heads, per])), 1);
    return fused.share([3 * rows, ...q.shape.slice(1)]);
  });
}

/** The inverse of interleaveQkv: [q, k, v], each [rows/3, …]. */
export function splitQkv(qkv: Tensor, heads: number): [Tensor, Tensor, Tensor] {
  const rows = qkv.shape[0];
  if (rows % (3 * heads)) throw new CheckpointError(`query_key_value has ${rows} rows, not divisible by 3 × ${heads} heads`);
  return scope(() => {
    const per = qkv.numel / (3 * heads);
    const h = qkv.share([heads, 3 * per]);
    return [0, 1, 2].map((t) => slice(h, 1, t * per, per).share([rows / 3, ...qkv.shape.slice(1)])) as [Tensor, Tensor, Tensor];
  });
}

const VIT_RENAMES: [RegExp, string][] = [
  [/^vision_model\.pre_layrnorm\.(weight|bias)$/, 'vision_model.embeddings.pre_layernorm.$1'],
  [/^vision_model\.embeddings\.patch_embedding\.weight$/, 'vision_model.embeddings.patch_embed.weight'],
  [/^(vision_model\.encoder\.layers\.\d+)\.layer_norm1\.(weight|bias)$/, '$1.input_layernorm.$2'],
  [/^(vision_model\.encoder\.layers\.\d+)\.layer_norm2\.(weight|bias)$/, '$1.post_attention_layernorm.$2'],
  [/^(vision_model\.encoder\.layers\.\d+)\.self_attn\.out_proj\.(weight|bias)$/, '$1.self_attn.dense.$2'],
  [/^(vision_model\.encoder\.layers\.\d+)\.mlp\.(fc1|fc2)\.(weight|bias)$/, '$1.mlp.$2.$3'],
  [/^vision_model\.post_layernorm\.(weight|bias)$/, 'vision_model.post_layernorm.$1'],
];

/**
 * HF CLIPVisionModel (or CLIPModel) tensors → mPLUG-Owl `vision_model.*`. Text-tower and projection keys are
 * dropped. Note the official model uses LayerNorm eps 1e-6 where CLIP trained with 1e-5 (a config matter).
 */
export function clipVisionToOwl(src: Tensors, heads: number): Map<string, Tensor> {
  const out = new Map<string, Tensor>();
  const cls = need(src, 'vision_model.embeddings.class_embedding', 'CLIP');
  out.set('vision_model.embeddings.cls_token', cls.share([1, 1, cls.numel]));
  const pos = need(src, 'vision_model.embeddings.position_embedding.weight', 'CLIP');
  out.set('vision_model.embeddings.position_embedding', pos.share([1, ...pos.shape]));
  const layers = new Set<string>();
  for (const [k, t] of src) {
    const layer = /^(vision_model\.encoder\.layers\.\d+)\.self_attn\.q_proj\.(weight|bias)$/.exec(k);
    if (layer) { layers.add(`${layer[1]}|${layer[2]}`); continue; }
    for (const [re, to] of VIT_RENAMES) if (re.test(k)) out.set(k.replace(re, to), t.share());
  }
  for (const lk of layers) {
    const [p, kind] = lk.split('|');
    const get = (n: string) => need(src, `${p}.self_attn.${n}_proj.${kind}`, 'CLIP');
    out.set(`${p}.self_attn.query_key_value.${kind}`, interleaveQkv(get('q'), get('k'), get('v'), heads));
  }
  return out;
}

/** mPLUG-Owl `vision_model.*` → HF CLIPVisionModel keys (the reverse of clipVisionToOwl). */
export function owlVisionToClip(src: Tensors, heads: number): Map<string, Tensor> {
  const out = new Map<string, Tensor>();
  const cls = need(src, 'vision_model.embeddings.cls_token', 'mPLUG-Owl');
  out.set('vision_model.embeddings.class_embedding', cls.share([cls.numel]));
  const pos = need(src, 'vision_model.embeddings.position_embedding', 'mPLUG-Owl');
  out.set('vision_model.embeddings.position_embedding.weight', pos.share(pos.shape.slice(1)));
  const back: [RegExp, string][] = [
    [/^vision_model\.embeddings\.pre_layernorm\.(weight|bias)$/, 'vision_model.pre_layrnorm.$1'],
    [/^vision_model\.embeddings\.patch_embed\.weight$/, 'vision_model.embeddings.patch_embedding.weight'],
    [/^(vision_model\.encoder\.layers\.\d+)\.input_layernorm\.(weight|bias)$/, '$1.layer_norm1.$2'],
    [/^(vision_model\.encoder\.layers\.\d+)\.post_attention_layernorm\.(weight|bias)$/, '$1.layer_norm2.$2'],
    [/^(vision_model\.encoder\.layers\.\d+)\.self_attn\.dense\.(weight|bias)$/, '$1.self_attn.out_proj.$2'],
    [/^(vision_model\.encoder\.layers\.\d+)\.mlp\.(fc1|fc2)\.(weight|bias)$/, '$1.mlp.$2.$3'],
    [/^vision_model\.post_layernorm\.(weight|bias)$/, 'vision_model.post_layernorm.$1'],
  ];
  for (const [k, t] of src) {
    const qkv = /^(vision_model\.encoder\.layers\.\d+)\.self_attn\.query_key_value\.(weight|bias)$/.exec(k);
    if (qkv) {
      const [q, kk, v] = splitQkv(t, heads);
      out.set(`${qkv[1]}.self_attn.q_proj.${qkv[2]}`, q);
      out.set(`${qkv[1]}.self_attn.k_proj.${qkv[2]}`, kk);
      out.set(`${qkv[1]}.self_attn.v_proj.${qkv[2]}`, v);
      continue;
    }
    for (const [re, to] of back) if (re.test(k)) out.set(k.replace(re, to), t.share());
  }
  return out;
}

/** HF LlamaForCausalLM keys (`model.*`, `lm_head.weight`) → `language_model.*`; rotary buffers dropped. */
export function llamaHfToOwl(src: Tensors): Map<string, Tensor> {
  const out = new Map<string, Tensor>();
  for (const [k, t] of src) {
    if (k.endsWith('rotary_emb.inv_freq')) continue;
    if (k.startsWith('model.') || k === 'lm_head.weight') out.set(`language_model.${k}`, t.share());
  }
  return out;
}

/** `language_model.*` → HF LlamaForCausalLM keys. */
export function owlToLlamaHf(src: Tensors): Map<string, Tensor> {
  const out = new Map<string, Tensor>();
  for (const [k, t] of src) if (k.startsWith('language_model.')) out.set(k.slice('language_model.'.length), t.share());
  return out;
}

/**
 * Row order that turns Meta's interleaved-pair RoPE rows of one q/k projection into HF's rotate-half rows
 * (HF's convert_llama_weights_to_hf `permute`): HF row h·D + j·D/2 + i comes from Meta row h·D + 2i + j.
 */
export function metaToHfRowOrder(rows: number, heads: number): Int32Array {
  const D = rows / heads, half = D / 2;
  const idx = new Int32Array(rows);
  for (let h = 0; h < heads; h++) for (let j = 0; j < 2; j++) for (let i = 0; i < half; i++) idx[h * D + j * half + i] = h * D + 2 * i + j;
  return idx;
}

export function hfToMetaRowOrder(rows: number, heads: number): Int32Array {
  const fwd = metaToHfRowOrder(rows, heads), inv = new Int32Array(rows);
  fwd.forEach((src, dst) => { inv[src] = dst; });
  return inv;
}

function permuteRows(t: Tensor, order: Int32Array): Tensor {
  return scope(() => gatherRows(t, tensor(order, [order.length], { device: t.device })));
}

/** Meta name ↔ official name, `{i}` standing for the layer index. */
const META_NAMES: [string, string][] = [
  ['tok_embeddings.weight', 'language_model.model.embed_tokens.weight'],
  ['norm.weight', 'language_model.model.norm.weight'],
  ['output.weight', 'language_model.lm_head.weight'],
  ['layers.{i}.attention.wq.weight', 'language_model.model.layers.{i}.self_attn.q_proj.weight'],
  ['layers.{i}.attention.wk.weight', 'language_model.model.layers.{i}.self_attn.k_proj.weight'],
  ['layers.{i}.attention.wv.weight', 'language_model.model.layers.{i}.self_attn.v_proj.weight'],
  ['layers.{i}.attention.wo.weight', 'language_model.model.layers.{i}.self_attn.o_proj.weight'],
  ['layers.{i}.feed_forward.w1.weight', 'language_model.model.layers.{i}.mlp.gate_proj.weight'],
  ['layers.{i}.feed_forward.w3.weight', 'language_model.model.layers.{i}.mlp.up_proj.weight'],
  ['layers.{i}.feed_forward.w2.weight', 'language_model.model.layers.{i}.mlp.down_proj.weight'],
  ['layers.{i}.attention_norm.weight', 'language_model.model.layers.{i}.input_layernorm.weight'],
  ['layers.{i}.ffn_norm.weight', 'language_model.model.layers.{i}.post_attention_layernorm.weight'],
];
const pattern = (template: string) => new RegExp(`^${template.replace(/\./g, '\\.').replace('{i}', '(\\d+)')}$`);
const renamer = (from: string, to: string) => {
  const re = pattern(from);
  return (k: string) => { const m = re.exec(k); return m ? to.replace('{i}', m[1] ?? '') : null; };
};
const META_TO_OWL = META_NAMES.map(([meta, owl]) => renamer(meta, owl));
const OWL_TO_META = META_NAMES.map(([meta, owl]) => renamer(owl, meta));

function renameAll(src: Tensors, rules: ((k: string) => string | null)[], qk: RegExp, heads: number, kvHeads: number,
  order: (rows: number, heads: number) => Int32Array): Map<string, Tensor> {
  const out = new Map<string, Tensor>();
  for (const [k, t] of src) {
    let name: string | null = null;
    for (const r of rules) if ((name = r(k)) !== null) break;
    if (name === null) continue; // rope.freqs, rotary buffers, anything else
    const m = qk.exec(k);
    out.set(name, m ? permuteRows(t, order(t.shape[0], m[1] === 'q' ? heads : kvHeads)) : t.share());
  }
  return out;
}

/** Meta's consolidated LLaMA (a single model-parallel shard) → `language_model.*`, q/k rows permuted. */
export function llamaMetaToOwl(src: Tensors, heads: number, kvHeads = heads): Map<string, Tensor> {
  return renameAll(src, META_TO_OWL, /\.attention\.w([qk])\.weight$/, heads, kvHeads, metaToHfRowOrder);
}

/** `language_model.*` → Meta names, q/k rows permuted back. */
export function owlToLlamaMeta(src: Tensors, heads: number, kvHeads = heads): Map<string, Tensor> {
  return renameAll(src, OWL_TO_META, /\.self_attn\.([qk])_proj\.weight$/, heads, kvHeads, hfToMetaRowOrder);
}

/**
 * Stage-1 initial weights from a CLIP vision tower and a LLaMA (HF or Meta names, detected): every official
 * `vision_model.*` and `language_model.*` key, shape-checked against the config. `missing` lists what the model must
 * initialise itself (`query_tokens`, `abstractor.*`). The returned tensors are owned by the caller.
 */
export function stage1FromPretrained(config: OwlConfig, clip: Tensors, llama: Tensors):
  { tensors: Map<string, Tensor>; missing: string[] } {
  const t = config.text;
  const isMeta = llama.has('tok_embeddings.weight');
  const parts = [clipVisionToOwl(clip, config.vision.numAttentionHeads),
    isMeta ? llamaMetaToOwl(llama, t.numAttentionHeads, t.numKeyValueHeads) : llamaHfToOwl(llama)];
  const tensors = new Map<string, Tensor>();
  for (const p of parts) for (const [k, v] of p) tensors.set(k, v);
  const expected = expectedKeys(config);
  const problems: string[] = [];
  for (const [k, v] of tensors) {
    const want = expected.get(k);
    const what = k.startsWith('vision_model.') ? 'CLIP' : 'LLaMA';
    if (!want) problems.push(`${k}: the ${what} checkpoint has it but this config does not (more layers than configured?)`);
    else if (want.length !== v.shape.length || want.some((d, i) => d !== v.shape[i])) {
      problems.push(`${k}: the ${what} checkpoint gives [${v.shape.join(', ')}] but the config expects [${want.join(', ')}]`);
    }
  }
  const missing = [...expected.keys()].filter((k) => !tensors.has(k));
  const notInit = missing.filter((k) => k.startsWith('vision_model.') || k.startsWith('language_model.'));
  for (const k of notInit) problems.push(`${k}: missing from the ${k.startsWith('vision_model.') ? 'CLIP' : 'LLaMA'} checkpoint`);
  if (problems.length) {
    for (const v of tensors.values()) v.dispose();
    throw new CheckpointError(`cannot initialise stage 1: ${problems[0]}` +
      (problems.length > 1 ? ` (and ${problems.length - 1} more)` : ''), { tensor: problems[0].split(':')[0] });
  }
  return { tensors, missing };
}
