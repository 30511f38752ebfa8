// PEFT adapters: the fixture adapter under its PEFT names, save/load round trips, Trainer `.default.` spellings,
// PEFT's older adapter_model.bin, and rank/shape mismatches named by file and tensor.
import test from 'ava';
import { mkdtempSync, copyFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { scope, type Tensor } from '../../lib/tensor/index.ts';
import { loadAdapter, saveAdapter } from '../../lib/model/io/peft.ts';
import { readConfig, parseOwlConfig, readAdapterConfig, parseAdapterConfig } from '../../lib/model/io/config.ts';
import { ConfigError } from '../../lib/model/io/errors.ts';
import { writeSafetensorsFile } from '../../lib/model/io/safetensors.ts';
import { CheckpointError } from '../../lib/model/io/errors.ts';
import { FIXTURE, rawHeader } from './helpers.ts';

const tmp = () => mkdtempSync(join(tmpdir(), 'owlet-peft-'));
const bytes = (t: Tensor) => Buffer.from(t.handle.read());
const names = [0, 1].flatMap((i) => ['q_proj', 'v_proj'].flatMap((p) => ['A', 'B'].map((w) =>
  `base_model.model.language_model.model.layers.${i}.self_attn.${p}.lora_${w}.weight`)));

test('the fixture adapter loads under PEFT names with the right shapes and values', (t) => {
  const model = readConfig(FIXTURE);
  const { header, dataStart, bytes: raw } = rawHeader(join(FIXTURE, 'adapter_model.safetensors'));
  scope(() => {
    const a = loadAdapter(FIXTURE, { model });
    t.is(a.config.r, 4);
    t.deepEqual([...a.tensors.keys()].sort(), [...names].sort());
    for (const [k, v] of a.tensors) {
      t.deepEqual([...v.shape], k.includes('lora_A') ? [4, 96] : [96, 4]);
      const h = header[k];
      t.true(bytes(v).equals(raw.subarray(dataStart + h.data_offsets[0], dataStart + h.data_offsets[1])), k);
    }
  });
});

test('save → load round trip is bit-identical; names stay PEFT names', (t) => {
  const dir = tmp();
  scope(() => {
    const a = loadAdapter(FIXTURE);
    const files = saveAdapter(dir, a.tensors, a.config);
    t.deepEqual(files.map((f) => f.slice(dir.length + 1)), ['adapter_model.safetensors', 'adapter_config.json']);
    t.deepEqual(readAdapterConfig(dir), a.config);
    const b = loadAdapter(dir, { model: readConfig(FIXTURE) });
    t.deepEqual([...b.tensors.keys()], [...a.tensors.keys()]);
    for (const [k, v] of a.tensors) t.true(bytes(b.tensors.get(k)!).equals(bytes(v)), k);
    t.deepEqual(rawHeader(join(dir, 'adapter_model.safetensors')).metadata, { format: 'pt' });
  });
});

test('Trainer checkpoints spell LoRA keys .lora_A.default.weight: accepted on load, never written', (t) => {
  const dir = tmp();
  scope(() => {
    const a = loadAdapter(FIXTURE);
    const trainer = new Map([...a.tensors].map(([k, v]) => [k.replace(/\.lora_([AB])\.weight$/, '.lora_$1.default.weight'), v]));
    writeSafetensorsFile(join(dir, 'adapter_model.safetensors'), trainer);
    copyFileSync(join(FIXTURE, 'adapter_config.json'), join(dir, 'adapter_config.json'));
    const b = loadAdapter(dir, { model: readConfig(FIXTURE) });
    t.deepEqual([...b.tensors.keys()].sort(), [...names].sort());
    const out = tmp();
    saveAdapter(out, trainer, a.config);
    t.deepEqual(Object.keys(rawHeader(join(out, 'adapter_model.safetensors')).header).sort(), [...names].sort());
  });
});

test("PEFT's older adapter_model.bin (torch.save) loads through the safe reader", (t) => {
  const dir = new URL('../fixtures/torch/adapter_bin/', import.meta.url).pathname;
  const model = parseOwlConfig({ text_config: { hidden_size: 6, num_attention_heads: 1, num_hidden_layers: 1,
    intermediate_size: 8, vocab_size: 10 } });
  scope(() => {
    const a = loadAdapter(dir, { model });
    t.like(a.config, { r: 2, loraAlpha: 4, taskType: null });
    const A = a.tensors.get('base_model.model.language_model.model.layers.0.self_attn.v_proj.lora_A.weight')!;
    t.deepEqual(Array.from(A.data<'f32'>()), Array.from({ length: 12 }, (_, i) => i / 8));
    t.is(a.tensors.size, 4);
  });
});

test('rank, shape and missing-tensor mismatches name the file and the tensor', (t) => {
  const dir = tmp();
  copyFileSync(join(FIXTURE, 'adapter_model.safetensors'), join(dir, 'adapter_model.safetensors'));
  writeFileSync(join(dir, 'adapter_config.json'), JSON.stringify({ peft_type: 'LORA', r: 8, lora_alpha: 16, target_modules: ['q_proj', 'v_proj'] }));
  const e1 = t.throws(() => loadAdapter(dir), { instanceOf: CheckpointError, message: /does not have rank r = 8/ });
  t.true(e1!.message.includes(join(dir, 'adapter_model.safetensors')));
  t.regex(e1!.tensor!, /lora_A\.weight$/);

  copyFileSync(join(FIXTURE, 'adapter_config.json'), join(dir, 'adapter_config.json'));
  const narrow = parseOwlConfig({ text_config: { hidden_size: 64, num_attention_heads: 4, num_hidden_layers: 2,
    intermediate_size: 160, vocab_size: 512 } });
  const e2 = t.throws(() => loadAdapter(dir, { model: narrow }), { instanceOf: CheckpointError, message: /has shape \[4, 96\] but the config expects \[4, 64\]/ });
  t.regex(e2!.tensor!, /layers\.0\.self_attn\.q_proj\.lora_A\.weight$/);

  const three = parseOwlConfig({ text_config: { hidden_size: 96, num_attention_heads: 4, num_hidden_layers: 3, intermediate_size: 160, vocab_size: 512 } });
  const e3 = t.throws(() => loadAdapter(dir, { model: three }), { instanceOf: CheckpointError, message: /missing/ });
  t.regex(e3!.tensor!, /layers\.2\./);
  t.throws(() => loadAdapter(tmp()), { message: /adapter_config\.json: not found/ });
});

// PEFT options owlet does not implement would load an adapter with the wrong scale or modules: refused by name; the
// empty values PEFT writes by default pass.
test('alpha_pattern, rank_pattern, exclude_modules and use_dora are refused unless empty', (t) => {
  const base = { peft_type: 'LORA', r: 4, lora_alpha: 8, target_modules: ['q_proj', 'v_proj'] };
  for (const extra of [{ alpha_pattern: { q_proj: 32 } }, { rank_pattern: { v_proj: 2 } }, { exclude_modules: ['layers.0.self_attn.q_proj'] },
    { use_dora: true }]) {
    t.throws(() => parseAdapterConfig({ ...base, ...extra }), { instanceOf: ConfigError, message: new RegExp(`${Object.keys(extra)[0]} .* is not supported`) });
  }
  const ok = parseAdapterConfig({ ...base, alpha_pattern: {}, rank_pattern: {}, exclude_modules: null, use_dora: false });
  t.is(ok.loraAlpha, 8);
});
