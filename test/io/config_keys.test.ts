// config.json / adapter_config.json parsing and writing, and the official key names as a function of the config.
import test from 'ava';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  readConfig, writeConfig, parseOwlConfig, owlConfigToJson, readAdapterConfig, writeAdapterConfig, parseAdapterConfig,
  defaultAdapterConfig, loraScaling, visionPositions,
} from '../../lib/model/io/config.ts';
import { expectedKeys, expectedLoraKeys, canonicalKey, parseLoraKey, isLoraTarget, linearModules } from '../../lib/model/io/keys.ts';
import { ConfigError } from '../../lib/model/io/errors.ts';
import { FIXTURE, rawHeader } from './helpers.ts';

const tmp = () => mkdtempSync(join(tmpdir(), 'owlet-cfg-'));

test('fixture config.json parses into the typed config', (t) => {
  const c = readConfig(FIXTURE);
  t.is(c.numQueryTokens, 8);
  t.is(c.mediaTokenLength, 9);
  t.like(c.vision, { hiddenSize: 64, intermediateSize: 128, numHiddenLayers: 2, numAttentionHeads: 4, imageSize: 224,
    patchSize: 14, layerNormEps: 1e-6, numChannels: 3, hiddenAct: 'quick_gelu' });
  t.like(c.abstractor, { hiddenSize: 64, numHiddenLayers: 2, numAttentionHeads: 4, intermediateSize: 96,
    attentionProbsDropoutProb: 0, layerNormEps: 1e-6, encoderHiddenSize: 64 });
  t.like(c.text, { hiddenSize: 96, intermediateSize: 160, numHiddenLayers: 2, numAttentionHeads: 4, numKeyValueHeads: 4,
    vocabSize: 512, rmsNormEps: 1e-6, ropeTheta: 10000, padTokenId: 2, tieWordEmbeddings: false });
  // Legacy/unknown keys are kept aside, not interpreted.
  t.deepEqual(c.abstractor.extra, { chunk_size_feed_forward: 0, gradient_checkpointing: false });
  t.like(c.extra, { media_token_id: -1, max_length: 48, seed: 0 });
  t.is(visionPositions(c), 257);
});

test('an empty config takes the 7B release defaults (spec §1.2–1.4)', (t) => {
  const c = parseOwlConfig({});
  t.is(c.numQueryTokens, 64);
  t.is(c.mediaTokenLength, 65);
  t.like(c.vision, { hiddenSize: 1024, numHiddenLayers: 24, numAttentionHeads: 16, intermediateSize: 4096, layerNormEps: 1e-6 });
  t.like(c.abstractor, { hiddenSize: 1024, numHiddenLayers: 6, intermediateSize: 2816, attentionProbsDropoutProb: 0.1 });
  t.like(c.text, { hiddenSize: 4096, numHiddenLayers: 32, intermediateSize: 11008, vocabSize: 32000, rmsNormEps: 1e-6 });
  // Parameter counts of spec §1.6 follow from expectedKeys of the defaults.
  const count = (pre: string) => [...expectedKeys(c)].filter(([k]) => pre.split('|').some((p) => k.startsWith(p)))
    .reduce((a, [, s]) => a + s.reduce((x, y) => x * y, 1), 0);
  t.is(count('vision_model.'), 303_179_776);
  t.is(count('abstractor.|query_tokens'), 81_473_536);
  t.is(count('language_model.'), 6_738_415_616);
  t.is(expectedLoraKeys(c, defaultAdapterConfig()).size, 128);
  t.is([...expectedLoraKeys(c, defaultAdapterConfig()).values()].reduce((a, s) => a + s[0] * s[1], 0), 4_194_304);
});

test('config round trip: write then read gives the same config, extras included', (t) => {
  const dir = tmp();
  const c = readConfig(FIXTURE);
  writeConfig(dir, c);
  t.deepEqual(readConfig(dir), c);
  const original = JSON.parse(readFileSync(join(FIXTURE, 'config.json'), 'utf8'));
  const written = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
  for (const k of Object.keys(original)) {
    if (typeof original[k] !== 'object') t.deepEqual(written[k], original[k], k);
    else for (const kk of Object.keys(original[k])) t.deepEqual(written[k][kk], original[k][kk], `${k}.${kk}`);
  }
});

test('bad configs give ConfigError naming the field', (t) => {
  t.throws(() => parseOwlConfig({ vision_config: { hidden_size: 'big' } }, 'x.json'),
    { instanceOf: ConfigError, message: /x\.json: vision_config\.hidden_size: / });
  t.throws(() => parseOwlConfig({ vision_config: { hidden_size: 100, num_attention_heads: 16 } }),
    { instanceOf: ConfigError, message: /vision_config\.hidden_size 100 is not divisible by num_attention_heads 16/ });
  t.throws(() => parseOwlConfig({ num_query_tokens: 8, media_token_length: 65 }),
    { instanceOf: ConfigError, message: /media_token_length 65 must be num_query_tokens \+ 1 = 9/ });
  t.throws(() => parseOwlConfig({ text_config: { model_type: 'bloom' } }), { instanceOf: ConfigError, message: /'bloom' is not supported/ });
  t.throws(() => parseOwlConfig({ visual_abstractor_config: { encoder_hidden_size: 768 } }),
    { instanceOf: ConfigError, message: /encoder_hidden_size 768 must equal vision_config\.hidden_size 1024/ });
  const dir = tmp();
  t.throws(() => readConfig(dir), { instanceOf: ConfigError, message: /config\.json: not found/ });
  writeFileSync(join(dir, 'config.json'), '{"num_query_tokens": ');
  t.throws(() => readConfig(dir), { instanceOf: ConfigError, message: /is not valid JSON/ });
});

test('expectedKeys(fixture config) is exactly the key set and shapes of the fixture model.safetensors', (t) => {
  const { header } = rawHeader(join(FIXTURE, 'model.safetensors'));
  const want = new Map(Object.entries(header).map(([k, h]) => [k, h.shape]));
  const got = expectedKeys(readConfig(FIXTURE));
  t.deepEqual([...got.keys()].sort(), [...want.keys()].sort());
  for (const [k, s] of got) t.deepEqual(s, want.get(k), k);
});

test('adapter_config.json: the fixture parses; defaults, scaling and the round trip', (t) => {
  const a = readAdapterConfig(FIXTURE);
  t.like(a, { r: 4, loraAlpha: 8, loraDropout: 0, bias: 'none', taskType: 'CAUSAL_LM', peftType: 'LORA' });
  t.deepEqual(a.targetModules, ['q_proj', 'v_proj']);
  t.is(loraScaling(a), 2);
  const dir = tmp();
  writeAdapterConfig(dir, a);
  t.deepEqual(readAdapterConfig(dir), a);
  const d = defaultAdapterConfig();
  t.like(d, { r: 8, loraAlpha: 32, loraDropout: 0.05, bias: 'none', taskType: null });
  t.is(loraScaling(d), 4);
  t.deepEqual(parseAdapterConfig({}).targetModules, ['q_proj', 'v_proj']);
  t.throws(() => parseAdapterConfig({ peft_type: 'IA3' }), { instanceOf: ConfigError, message: /IA3/ });
  t.throws(() => parseAdapterConfig({ fan_in_fan_out: true }), { instanceOf: ConfigError });
  t.throws(() => parseAdapterConfig({ r: 0 }), { instanceOf: ConfigError, message: /^r: / });
});

test('LoRA targets follow PEFT matching: list suffixes, full-match regex, layers_to_transform', (t) => {
  const c = readConfig(FIXTURE);
  const list = parseAdapterConfig({ target_modules: ['q_proj', 'v_proj'] });
  const official = parseAdapterConfig({ target_modules: '.*language_model.*\\.(q_proj|v_proj)' });
  const pick = (a: typeof list) => [...linearModules(c).keys()].filter((m) => isLoraTarget(a, m));
  const want = [0, 1].flatMap((i) => ['q_proj', 'v_proj'].map((p) => `language_model.model.layers.${i}.self_attn.${p}`));
  t.deepEqual(pick(list), want);
  t.deepEqual(pick(official), want);
  t.false(isLoraTarget(parseAdapterConfig({ target_modules: 'q_proj' }), 'language_model.model.layers.0.self_attn.q_proj'));
  t.deepEqual(pick(parseAdapterConfig({ target_modules: ['q_proj'], layers_to_transform: [1] })),
    ['language_model.model.layers.1.self_attn.q_proj']);
  t.true(pick(parseAdapterConfig({ target_modules: ['dense'] })).every((m) => m.startsWith('vision_model.')));
  const shapes = expectedLoraKeys(c, readAdapterConfig(FIXTURE));
  t.deepEqual(shapes.get('base_model.model.language_model.model.layers.1.self_attn.v_proj.lora_A.weight'), [4, 96]);
  t.deepEqual(shapes.get('base_model.model.language_model.model.layers.1.self_attn.v_proj.lora_B.weight'), [96, 4]);
});

test('canonical names: Trainer .default. LoRA keys, PeftModel prefixes, rotary buffers', (t) => {
  const k = 'language_model.model.layers.3.self_attn.q_proj';
  t.is(canonicalKey(`base_model.model.${k}.lora_A.default.weight`), `base_model.model.${k}.lora_A.weight`);
  t.is(canonicalKey(`base_model.model.${k}.lora_B.weight`), `base_model.model.${k}.lora_B.weight`);
  t.is(canonicalKey(`${k}.lora_B.default.weight`), `base_model.model.${k}.lora_B.weight`);
  t.is(canonicalKey(`base_model.model.${k}.weight`), `${k}.weight`);
  t.is(canonicalKey(`base_model.model.${k}.base_layer.weight`), `${k}.weight`);
  t.is(canonicalKey('language_model.model.layers.0.self_attn.rotary_emb.inv_freq'), null);
  t.is(canonicalKey('query_tokens'), 'query_tokens');
  t.deepEqual(parseLoraKey(`base_model.model.${k}.lora_A.default.weight`), { module: k, which: 'A' });
  t.is(parseLoraKey(`${k}.weight`), null);
});

test('owlConfigToJson writes the official field names', (t) => {
  const j = owlConfigToJson(parseOwlConfig({})) as Record<string, Record<string, unknown>>;
  t.is(j.num_query_tokens as unknown, 64);
  t.is(j.vision_config.layer_norm_eps, 1e-6);
  t.is(j.visual_abstractor_config.encoder_hidden_size, 1024);
  t.is(j.text_config.rms_norm_eps, 1e-6);
  t.is(j.text_config.tie_word_embeddings, false);
  t.false('extra' in j.text_config);
});
