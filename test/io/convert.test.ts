// Conversions for stage-1 initialisation: the per-head q/k/v interleave (§2.4) on a hand-built example and against
// its index formula, CLIP ↔ mPLUG-Owl and HF/Meta LLaMA ↔ `language_model.*` round trips, and the stage-1 assembly.
import test from 'ava';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { scope, tensor, type Tensor } from '../../lib/tensor/index.ts';
import {
  interleaveQkv, splitQkv, clipVisionToOwl, owlVisionToClip, llamaHfToOwl, owlToLlamaHf, llamaMetaToOwl, owlToLlamaMeta,
  stage1FromPretrained, metaToHfRowOrder, hfToMetaRowOrder,
} from '../../lib/model/io/convert.ts';
import { readConfig, parseOwlConfig, owlConfigToJson } from '../../lib/model/io/config.ts';
import { expectedKeys } from '../../lib/model/io/keys.ts';
import { readSafetensorsFile, writeSafetensorsFile } from '../../lib/model/io/safetensors.ts';
import { saveSafetensors } from '../../lib/model/io/sharded.ts';
import { loadStage1FromPretrained } from '../../lib/model/io/checkpoint.ts';
import { CheckpointError } from '../../lib/model/io/errors.ts';
import { rng } from '../helpers/rng.ts';
import { FIXTURE } from './helpers.ts';

const bytes = (t: Tensor) => Buffer.from(t.handle.read());
const sameTensor = (a: Tensor, b: Tensor) => a.dtype === b.dtype && a.shape.join() === b.shape.join() && bytes(a).equals(bytes(b));

test('interleave: hand-built 2 heads × head size 2', (t) => {
  scope(() => {
    const q = tensor([1, 2, 3, 4], [4, 1]), k = tensor([11, 12, 13, 14], [4, 1]), v = tensor([21, 22, 23, 24], [4, 1]);
    const w = interleaveQkv(q, k, v, 2);
    t.deepEqual([...w.shape], [12, 1]);
    t.deepEqual(Array.from(w.data<'f32'>()), [1, 2, 11, 12, 21, 22, 3, 4, 13, 14, 23, 24]);
    const b = interleaveQkv(tensor([1, 2, 3, 4]), tensor([11, 12, 13, 14]), tensor([21, 22, 23, 24]), 2);
    t.deepEqual(Array.from(b.data<'f32'>()), [1, 2, 11, 12, 21, 22, 3, 4, 13, 14, 23, 24]);
    const [q2, k2, v2] = splitQkv(w, 2);
    t.deepEqual(Array.from(q2.data<'f32'>()), [1, 2, 3, 4]);
    t.deepEqual(Array.from(k2.data<'f32'>()), [11, 12, 13, 14]);
    t.deepEqual(Array.from(v2.data<'f32'>()), [21, 22, 23, 24]);
  });
});

test('interleave follows c = h·3d + t·d + j on odd sizes, any dtype, and splits back bit-identically', (t) => {
  const H = 3, d = 5, inp = 7, V = H * d, r = rng(3);
  scope(() => {
    const mats = [0, 1, 2].map(() => Float32Array.from({ length: V * inp }, () => r() - 0.5));
    const [q, k, v] = mats.map((m) => tensor(m, [V, inp]));
    const w = interleaveQkv(q, k, v, H).data<'f32'>();
    for (let h = 0; h < H; h++) for (let tt = 0; tt < 3; tt++) for (let j = 0; j < d; j++) for (let c = 0; c < inp; c++) {
      if (w[(h * 3 * d + tt * d + j) * inp + c] !== mats[tt][(h * d + j) * inp + c]) { t.fail(`h${h} t${tt} j${j}`); return; }
    }
    const bf = [q, k, v].map((x) => tensor(x.data<'f32'>(), [V, inp], { dtype: 'bf16' }));
    const fused = interleaveQkv(bf[0], bf[1], bf[2], H);
    t.is(fused.dtype, 'bf16');
    splitQkv(fused, H).forEach((x, i) => t.true(sameTensor(x, bf[i])));
    t.throws(() => interleaveQkv(q, tensor(new Float32Array(V), [V, 1]), v, H), { instanceOf: CheckpointError });
    t.throws(() => splitQkv(tensor(new Float32Array(10), [10]), H), { instanceOf: CheckpointError, message: /not divisible/ });
  });
});

const HF_CLIP_LAYER = ['layer_norm1.weight', 'layer_norm1.bias', 'self_attn.q_proj.weight', 'self_attn.q_proj.bias',
  'self_attn.k_proj.weight', 'self_attn.k_proj.bias', 'self_attn.v_proj.weight', 'self_attn.v_proj.bias',
  'self_attn.out_proj.weight', 'self_attn.out_proj.bias', 'layer_norm2.weight', 'layer_norm2.bias', 'mlp.fc1.weight',
  'mlp.fc1.bias', 'mlp.fc2.weight', 'mlp.fc2.bias'];

test('fixture vision tower → HF CLIP names → back is bit-identical', (t) => {
  const c = readConfig(FIXTURE);
  scope(() => {
    const owl = readSafetensorsFile(join(FIXTURE, 'model.safetensors'), { filter: (n) => n.startsWith('vision_model.') }).tensors;
    const clip = owlVisionToClip(owl, c.vision.numAttentionHeads);
    const want = ['vision_model.embeddings.class_embedding', 'vision_model.embeddings.patch_embedding.weight',
      'vision_model.embeddings.position_embedding.weight', 'vision_model.pre_layrnorm.weight', 'vision_model.pre_layrnorm.bias',
      ...[0, 1].flatMap((i) => HF_CLIP_LAYER.map((s) => `vision_model.encoder.layers.${i}.${s}`)),
      'vision_model.post_layernorm.weight', 'vision_model.post_layernorm.bias'];
    t.deepEqual([...clip.keys()].sort(), want.sort());
    t.deepEqual([...clip.get('vision_model.embeddings.class_embedding')!.shape], [64]);
    t.deepEqual([...clip.get('vision_model.embeddings.position_embedding.weight')!.shape], [257, 64]);
    t.deepEqual([...clip.get('vision_model.encoder.layers.1.self_attn.k_proj.weight')!.shape], [64, 64]);
    // A CLIPModel checkpoint also carries the text tower: ignored.
    const withText = new Map(clip);
    withText.set('text_model.embeddings.token_embedding.weight', tensor([1, 2], [1, 2]));
    withText.set('visual_projection.weight', tensor([1, 2], [1, 2]));
    const back = clipVisionToOwl(withText, c.vision.numAttentionHeads);
    t.deepEqual([...back.keys()].sort(), [...owl.keys()].sort());
    for (const [k, v] of owl) t.true(sameTensor(back.get(k)!, v), k);
  });
});

test('Meta ↔ HF q/k row permutation: hand example and round trip', (t) => {
  t.deepEqual(Array.from(metaToHfRowOrder(4, 1)), [0, 2, 1, 3]);
  t.deepEqual(Array.from(metaToHfRowOrder(8, 2)), [0, 2, 1, 3, 4, 6, 5, 7]);
  const order = metaToHfRowOrder(24, 3), inv = hfToMetaRowOrder(24, 3);
  t.deepEqual(Array.from(order, (_, i) => inv[order[i]]), Array.from({ length: 24 }, (_, i) => i));
  t.not(Array.from(order).join(), Array.from(inv).join()); // not its own inverse for D > 4: the direction matters
});

test('LLaMA: HF names and Meta names round-trip to the fixture language model', (t) => {
  const c = readConfig(FIXTURE);
  scope(() => {
    const owl = readSafetensorsFile(join(FIXTURE, 'model.safetensors'), { filter: (n) => n.startsWith('language_model.') }).tensors;
    const hf = owlToLlamaHf(owl);
    t.true(hf.has('model.embed_tokens.weight') && hf.has('lm_head.weight') && hf.has('model.layers.1.mlp.down_proj.weight'));
    hf.set('model.layers.0.self_attn.rotary_emb.inv_freq', tensor([1, 2], [2]));
    const fromHf = llamaHfToOwl(hf);
    t.is(fromHf.size, owl.size);
    for (const [k, v] of owl) t.true(sameTensor(fromHf.get(k)!, v), k);

    const meta = owlToLlamaMeta(owl, c.text.numAttentionHeads);
    t.deepEqual([...meta.keys()].filter((k) => !k.startsWith('layers.')).sort(), ['norm.weight', 'output.weight', 'tok_embeddings.weight']);
    t.true(meta.has('layers.1.attention.wq.weight') && meta.has('layers.0.feed_forward.w3.weight') && meta.has('layers.0.ffn_norm.weight'));
    const q = owl.get('language_model.model.layers.0.self_attn.q_proj.weight')!;
    t.false(sameTensor(meta.get('layers.0.attention.wq.weight')!, q)); // rows permuted
    t.true(sameTensor(meta.get('layers.0.attention.wv.weight')!, owl.get('language_model.model.layers.0.self_attn.v_proj.weight')!));
    // Meta row h·D + 2i + j is HF row h·D + j·D/2 + i.
    const D = 96 / 4, qm = meta.get('layers.0.attention.wq.weight')!.data<'f32'>(), qh = q.data<'f32'>();
    t.deepEqual(Array.from(qm.subarray((D + 2 * 3 + 1) * 96, (D + 2 * 3 + 2) * 96)),
      Array.from(qh.subarray((D + D / 2 + 3) * 96, (D + D / 2 + 4) * 96)));
    meta.set('rope.freqs', tensor([1], [1]));
    const fromMeta = llamaMetaToOwl(meta, c.text.numAttentionHeads);
    t.is(fromMeta.size, owl.size);
    for (const [k, v] of owl) t.true(sameTensor(fromMeta.get(k)!, v), k);
  });
});

test('stage 1 from separate CLIP and LLaMA checkpoints on disk equals the fixture weights', (t) => {
  const c = readConfig(FIXTURE);
  const dir = mkdtempSync(join(tmpdir(), 'owlet-s1-'));
  scope(() => {
    const owl = readSafetensorsFile(join(FIXTURE, 'model.safetensors')).tensors;
    writeSafetensorsFile(join(dir, 'clip.safetensors'), owlVisionToClip(owl, c.vision.numAttentionHeads));
    saveSafetensors(join(dir, 'model.safetensors'), owlToLlamaHf(owl), { maxShardBytes: 100_000 }); // sharded LLaMA dir
    const { tensors, missing } = loadStage1FromPretrained(c, join(dir, 'clip.safetensors'), dir);
    const expected = expectedKeys(c);
    t.deepEqual(missing.sort(), [...expected.keys()].filter((k) => k === 'query_tokens' || k.startsWith('abstractor.')).sort());
    t.is(tensors.size + missing.length, expected.size);
    for (const [k, v] of tensors) t.true(sameTensor(v, owl.get(k)!), k);

    // A CLIP whose width does not match the config fails naming the tensor.
    const wide = parseOwlConfig({ ...owlConfigToJson(c), vision_config: { ...owlConfigToJson(c).vision_config as object,
      hidden_size: 128, num_attention_heads: 4 }, visual_abstractor_config: { ...owlConfigToJson(c).visual_abstractor_config as object,
      encoder_hidden_size: 128, hidden_size: 128 } });
    const clip = owlVisionToClip(owl, 4);
    const err = t.throws(() => stage1FromPretrained(wide, clip, owlToLlamaHf(owl)), { instanceOf: CheckpointError });
    t.regex(err!.message, /the CLIP checkpoint gives \[1, 1, 64\] but the config expects \[1, 1, 128\]/);
  });
});
