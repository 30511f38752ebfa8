// The official state-dict key names of spec §2.2 as a function of the config, with their shapes, plus the PEFT LoRA
// names (§2.5) and the normalisation applied on load (Trainer `.default.` names, `base_model.model.` prefixes,
// `rotary_emb.inv_freq` buffers). In memory, owlet names every tensor by these strings.
import { createContext, Script, type Context } from 'node:vm';
import type { AdapterConfig, OwlConfig } from './config.ts';
import { visionPositions } from './config.ts';
import { ConfigError } from './errors.ts';

/** Every tensor of an mPLUG-Owl model under its official key, with its shape, in module order. */
export function expectedKeys(c: OwlConfig): Map<string, number[]> {
  const m = new Map<string, number[]>();
  const linear = (name: string, out: number, inp: number, bias = true) => {
    m.set(`${name}.weight`, [out, inp]);
    if (bias) m.set(`${name}.bias`, [out]);
  };
  const norm = (name: string, n: number, bias = true) => {
    m.set(`${name}.weight`, [n]);
    if (bias) m.set(`${name}.bias`, [n]);
  };

  const v = c.vision, V = v.hiddenSize;
  m.set('vision_model.embeddings.cls_token', [1, 1, V]);
  m.set('vision_model.embeddings.patch_embed.weight', [V, v.numChannels, v.patchSize, v.patchSize]);
  m.set('vision_model.embeddings.position_embedding', [1, visionPositions(c), V]);
  norm('vision_model.embeddings.pre_layernorm', V);
  for (let i = 0; i < v.numHiddenLayers; i++) {
    const p = `vision_model.encoder.layers.${i}`;
    norm(`${p}.input_layernorm`, V);
    linear(`${p}.self_attn.query_key_value`, 3 * V, V);
    linear(`${p}.self_attn.dense`, V, V);
    norm(`${p}.post_attention_layernorm`, V);
    linear(`${p}.mlp.fc1`, v.intermediateSize, V);
    linear(`${p}.mlp.fc2`, V, v.intermediateSize);
  }
  norm('vision_model.post_layernorm', V);

  const a = c.abstractor, A = a.hiddenSize, T = c.text.hiddenSize;
  m.set('query_tokens', [1, c.numQueryTokens, A]);
  for (let l = 0; l < a.numHiddenLayers; l++) {
    const p = `abstractor.encoder.layers.${l}.crossattention`;
    norm(`${p}.norm1`, A);
    norm(`${p}.normk`, a.encoderHiddenSize);
    linear(`${p}.attention.query`, A, A);
    linear(`${p}.attention.key`, A, a.encoderHiddenSize);
    linear(`${p}.attention.value`, A, a.encoderHiddenSize);
    linear(`${p}.output.out_proj`, A, A);
    norm(`${p}.output.norm2`, A);
    linear(`${p}.output.mlp.w1`, a.intermediateSize, A);
    linear(`${p}.output.mlp.w3`, a.intermediateSize, A);
    norm(`${p}.output.mlp.ffn_ln`, a.intermediateSize);
    linear(`${p}.output.mlp.w2`, A, a.intermediateSize);
  }
  linear('abstractor.visual_fc', T, A);
  m.set('abstractor.vit_eos', [1, 1, T]);

  const t = c.text, kv = (T / t.numAttentionHeads) * t.numKeyValueHeads;
  m.set('language_model.model.embed_tokens.weight', [t.vocabSize, T]);
  for (let i = 0; i < t.numHiddenLayers; i++) {
    const p = `language_model.model.layers.${i}`;
    linear(`${p}.self_attn.q_proj`, T, T, false);
    linear(`${p}.self_attn.k_proj`, kv, T, false);
    linear(`${p}.self_attn.v_proj`, kv, T, false);
    linear(`${p}.self_attn.o_proj`, T, T, false);
    linear(`${p}.mlp.gate_proj`, t.intermediateSize, T, false);
    linear(`${p}.mlp.up_proj`, t.intermediateSize, T, false);
    linear(`${p}.mlp.down_proj`, T, t.intermediateSize, false);
    norm(`${p}.input_layernorm`, T, false);
    norm(`${p}.post_attention_layernorm`, T, false);
  }
  norm('language_model.model.norm', T, false);
  if (!t.tieWordEmbeddings) linear('language_model.lm_head', t.vocabSize, T, false);
  return m;
}

/** Every nn.Linear of the model (official module names) with its [out, in] shape: the candidates for LoRA. */
export function linearModules(c: OwlConfig): Map<string, [number, number]> {
  const m = new Map<string, [number, number]>();
  for (const [k, s] of expectedKeys(c)) {
    if (k.endsWith('.weight') && s.length === 2 && !k.endsWith('embed_tokens.weight')) {
      m.set(k.slice(0, -'.weight'.length), [s[0], s[1]]);
    }
  }
  return m;
}

/** PEFT's target test: a regex string must match the whole module name; a list entry must equal it or its tail. */
export function isLoraTarget(a: Pick<AdapterConfig, 'targetModules' | 'layersToTransform'>, moduleName: string): boolean {
  const t = a.targetModules;
  const hit = typeof t === 'string'
    ? regexFullMatch(t, moduleName)
    : t.some((x) => moduleName === x || moduleName.endsWith(`.${x}`));
  if (!hit || a.layersToTransform === null || a.layersToTransform === undefined) return hit;
  const layer = /\.layers\.(\d+)\./.exec(moduleName);
  const want = Array.isArray(a.layersToTransform) ? a.layersToTransform : [a.layersToTransform];
  return !!layer && want.includes(Number(layer[1]));
}

/** How long one target_modules regex may take on one module name; real patterns take microseconds. */
export const REGEX_TIME_LIMIT_MS = 500;
const regexScript = new Script('re.test(name)');
/** pattern → (module name → full match), so a pattern runs once per module name, not once per forward. */
const regexResults = new Map<string, { context: Context; hits: Map<string, boolean> }>();

/**
 * `^(?:pattern)$` tested against `name` under a time limit. The pattern comes from adapter_config.json, i.e. from a
 * downloaded file, and a backtracking one such as `(.*)*z` took hours on a 46-character module name; in a vm with a
 * timeout V8 interrupts it. Results are cached, so the vm costs well under a millisecond per module name, once.
 */
function regexFullMatch(pattern: string, name: string): boolean {
  let r = regexResults.get(pattern);
  if (!r) {
    r = { context: createContext({ re: new RegExp(`^(?:${pattern})$`), name: '' }), hits: new Map() };
    regexResults.set(pattern, r);
  }
  let hit = r.hits.get(name);
  if (hit === undefined) {
    r.context.name = name;
    try {
      hit = regexScript.runInContext(r.context, { timeout: REGEX_TIME_LIMIT_MS }) === true;
    } catch (e) {
      if ((e as { code?: string }).code !== 'ERR_SCRIPT_EXECUTION_TIMEOUT') throw e;
      throw new ConfigError(`target_modules ${JSON.stringify(pattern)} did not finish matching the module name '${name}' ` +
        `within ${REGEX_TIME_LIMIT_MS} ms: the regular expression backtracks catastrophically (e.g. a nested quantifier ` +
        'like (.*)*); simplify it or list the module names');
    }
    r.hits.set(name, hit);
  }
  return hit;
}

export const PEFT_PREFIX = 'base_model.model.';

/** The PEFT key of a LoRA matrix of an official module (`…q_proj` → `base_model.model.…q_proj.lora_A.weight`). */
export function loraKey(moduleName: string, which: 'A' | 'B'): string { return `${PEFT_PREFIX}${moduleName}.lora_${which}.weight`; }

/** Every LoRA tensor the adapter config implies for this model, under PEFT names: A is [r, in], B is [out, r]. */
export function expectedLoraKeys(c: OwlConfig, a: AdapterConfig): Map<string, number[]> {
  const m = new Map<string, number[]>();
  for (const [mod, [out, inp]] of linearModules(c)) {
    if (!isLoraTarget(a, mod)) continue;
    m.set(loraKey(mod, 'A'), [a.r, inp]);
    m.set(loraKey(mod, 'B'), [out, a.r]);
  }
  return m;
}

/** Parses a LoRA key in any of its spellings; null for other keys. */
export function parseLoraKey(key: string): { module: string; which: 'A' | 'B' } | null {
  const m = /^(?:base_model\.model\.)?(.+)\.lora_([AB])(?:\.default)?\.weight$/.exec(key);
  return m ? { module: m[1], which: m[2] as 'A' | 'B' } : null;
}

/** Buffers that checkpoints carry but owlet recomputes: never loaded. */
export function isIgnoredKey(key: string): boolean {
  return key.endsWith('.rotary_emb.inv_freq') || key.endsWith('.position_ids');
}

/**
 * The canonical in-memory name of a checkpoint key, or null for ignored buffers:
 * LoRA keys become `base_model.model.<module>.lora_{A,B}.weight` (Trainer checkpoints spell them `.lora_A.default.weight`);
 * base weights inside a PeftModel state dict (`base_model.model.<key>`, newer PEFT's `.base_layer.`) become official keys.
 */
export function canonicalKey(key: string): string | null {
  if (isIgnoredKey(key)) return null;
  const lora = parseLoraKey(key);
  if (lora) return loraKey(lora.module, lora.which);
  let k = key.startsWith(PEFT_PREFIX) ? key.slice(PEFT_PREFIX.length) : key;
  k = k.replace('.base_layer.', '.');
  return k;
}
