import test from 'ava';
import { tensor, type Tensor } from '../../lib/tensor/index.ts';
import { OptimizerConfig } from '../../lib/train/config-schema.ts';
import { ConfigError } from '../../lib/train/errors.ts';
import { applyStage, decayGroups, officialGroupOf } from '../../lib/train/param-groups.ts';
import type { LoraSpec, TrainableModel } from '../../lib/train/types.ts';

const NAMES = [
  'vision_model.embeddings.cls_token', 'vision_model.embeddings.patch_embed.weight', 'vision_model.embeddings.pre_layernorm.weight',
  'vision_model.encoder.layers.0.input_layernorm.bias', 'vision_model.encoder.layers.0.self_attn.query_key_value.weight',
  'vision_model.encoder.layers.0.mlp.fc1.bias', 'vision_model.post_layernorm.weight',
  'query_tokens',
  'abstractor.encoder.layers.0.crossattention.norm1.weight', 'abstractor.encoder.layers.0.crossattention.normk.bias',
  'abstractor.encoder.layers.0.crossattention.attention.key.weight', 'abstractor.encoder.layers.0.crossattention.output.mlp.ffn_ln.weight',
  'abstractor.encoder.layers.0.crossattention.output.mlp.w2.weight', 'abstractor.visual_fc.weight', 'abstractor.vit_eos',
  'language_model.model.embed_tokens.weight', 'language_model.model.layers.0.self_attn.q_proj.weight',
  'language_model.model.layers.0.input_layernorm.weight', 'language_model.model.norm.weight', 'language_model.lm_head.weight',
];

class NamesModel implements TrainableModel {
  params = new Map<string, Tensor>(NAMES.map((n) => [n, tensor([0])]));
  loraCalls: LoraSpec[] = [];
  parameters() { return this.params; }
  addLora(o: LoraSpec) {
    this.loraCalls.push(o);
    for (const m of o.targets) for (const ab of ['A', 'B']) this.params.set(`language_model.model.layers.0.self_attn.${m}.lora_${ab}.weight`, tensor([0]));
  }
  forward(): never { throw new Error('not used'); }
}

test('official key names map to the parameter groups', (t) => {
  t.is(officialGroupOf('vision_model.encoder.layers.3.mlp.fc2.weight'), 'vision');
  t.is(officialGroupOf('query_tokens'), 'queries');
  t.is(officialGroupOf('abstractor.vit_eos'), 'abstractor');
  t.is(officialGroupOf('language_model.model.layers.31.self_attn.v_proj.weight'), 'llm');
  t.is(officialGroupOf('language_model.model.layers.31.self_attn.v_proj.lora_B.weight'), 'lora');
  t.is(officialGroupOf('base_model.model.language_model.model.layers.29.self_attn.v_proj.lora_B.default.weight'), 'lora');
  t.throws(() => officialGroupOf('mystery.weight'), { instanceOf: ConfigError });
});

test('stage 1 trains vision + queries + abstractor; the LLM is frozen', (t) => {
  const m = new NamesModel();
  const tr = applyStage(m, { train: ['vision', 'queries', 'abstractor'] });
  t.deepEqual([...tr.keys()], NAMES.filter((n) => !n.startsWith('language_model.')));
  t.false(m.params.get('language_model.lm_head.weight')!.requiresGrad);
  t.true(m.params.get('query_tokens')!.requiresGrad);
  t.is(m.loraCalls.length, 0);
});

test('stage 2 adds LoRA once and trains it (and optionally the abstractor)', (t) => {
  const m = new NamesModel();
  const lora = { r: 8, alpha: 32, dropout: 0.05, targets: ['q_proj', 'v_proj'] };
  const tr = applyStage(m, { train: ['lora'], lora });
  t.deepEqual([...tr.keys()].sort(), ['language_model.model.layers.0.self_attn.q_proj.lora_A.weight', 'language_model.model.layers.0.self_attn.q_proj.lora_B.weight',
    'language_model.model.layers.0.self_attn.v_proj.lora_A.weight', 'language_model.model.layers.0.self_attn.v_proj.lora_B.weight']);
  const again = applyStage(m, { train: ['lora', 'queries', 'abstractor'], lora });
  t.is(m.loraCalls.length, 1, 'adapters already present are reused (a resumed stage 2)');
  t.is(again.size, 4 + 1 + 7);
  t.false(m.params.get('vision_model.embeddings.cls_token')!.requiresGrad);
  t.throws(() => applyStage({ parameters: () => new Map(), forward: () => { throw new Error(); } } as unknown as TrainableModel<never>, { train: ['lora'], lora }),
    { instanceOf: ConfigError, message: /cannot add LoRA adapters/ });
  const plain = new NamesModel();
  for (const k of [...plain.params.keys()]) if (k.startsWith('vision_model.')) plain.params.delete(k);
  t.throws(() => applyStage(plain, { train: ['vision'] }), { instanceOf: ConfigError, message: /no parameters in group\(s\) vision/ });
});

test('default weight-decay groups: no decay on norms, biases and query tokens; LoRA is decayed (HF)', (t) => {
  const m = new NamesModel();
  m.addLora({ r: 8, alpha: 32, dropout: 0, targets: ['q_proj'] });
  const all = new Map(m.params);
  const { no_decay } = OptimizerConfig.parse({ lr: 1 });
  const [decay, none] = decayGroups(all, 0.1, no_decay);
  t.is(decay.weightDecay, 0.1);
  t.is(none.weightDecay, 0);
  t.deepEqual([...none.params.keys()], [
    'vision_model.embeddings.pre_layernorm.weight', 'vision_model.encoder.layers.0.input_layernorm.bias',
    'vision_model.encoder.layers.0.mlp.fc1.bias', 'vision_model.post_layernorm.weight', 'query_tokens',
    'abstractor.encoder.layers.0.crossattention.norm1.weight', 'abstractor.encoder.layers.0.crossattention.normk.bias',
    'abstractor.encoder.layers.0.crossattention.output.mlp.ffn_ln.weight', 'language_model.model.layers.0.input_layernorm.weight',
    'language_model.model.norm.weight']);
  t.true(decay.params.has('language_model.model.layers.0.self_attn.q_proj.lora_A.weight'));
  t.true(decay.params.has('abstractor.vit_eos'));
  t.deepEqual(decayGroups(new Map([['a.bias', tensor([0])]]), 0.1, ['bias$']).map((g) => g.name), ['no_decay']);
});
