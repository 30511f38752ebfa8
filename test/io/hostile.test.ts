// Files that are damaged, hostile or merely odd (the format audit of session 9): each case once loaded wrong numbers
// without a word, hung, allocated gigabytes from a few bytes, or wrote through a planted symlink. Each is now a typed
// error naming the file, or a write that cannot be fooled.
import test from 'ava';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { scope, tensor } from '../../lib/tensor/index.ts';
import { saveSafetensors } from '../../lib/model/io/sharded.ts';
import { loadCheckpoint, saveCheckpoint } from '../../lib/model/io/checkpoint.ts';
import { TorchCheckpoint, readTorchFile } from '../../lib/model/io/torch_pickle.ts';
import { unpickle } from '../../lib/model/io/pickle.ts';
import { CheckpointError } from '../../lib/model/io/errors.ts';
import { loadModel } from '../../lib/model/load.ts';
import { tinyOwl } from '../helpers/tiny-owl.ts';
import { parseOwlConfig } from '../../lib/model/io/config.ts';
import { ConfigError } from '../../lib/model/io/errors.ts';
import { loadTokenizerJson, TokenizerError } from '../../lib/data/index.ts';

const tmp = () => mkdtempSync(join(tmpdir(), 'owlet-hostile-'));
const TORCH = new URL('../fixtures/torch/state_dict.bin', import.meta.url).pathname;

test('an overwrite of a sharded checkpoint that fails half-way leaves the old one whole, never a mix', (t) => {
  const dir = tmp(), path = join(dir, 'model.safetensors');
  scope(() => {
    const v = (x: number) => tensor(new Float32Array(64).fill(x));
    saveSafetensors(path, new Map([['a', v(1)], ['b', v(1)], ['c', v(1)]]), { maxShardBytes: 256 });
    const gone = v(2);
    gone.dispose(); // the second shard's save fails on it
    t.throws(() => saveSafetensors(path, new Map([['a', v(2)], ['b', gone], ['c', v(2)]]), { maxShardBytes: 256 }));
    // (new shards are staged under temporary names and renamed only once all are complete: hostile-more.test.ts)
    t.deepEqual([...loadCheckpoint(dir).values()].map((x) => x.toArray()[0]), [1, 1, 1]);
    // a complete save with fewer shards leaves none of the earlier ones behind
    saveSafetensors(path, new Map([['a', v(3)], ['b', v(3)], ['c', v(3)]]), { maxShardBytes: 256 });
    saveSafetensors(path, new Map([['a', v(4)], ['b', v(4)]]), { maxShardBytes: 256 });
    t.deepEqual(readdirSync(dir).sort(), ['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors', 'model.safetensors.index.json']);
    t.deepEqual(loadCheckpoint(dir).get('b')!.toArray().slice(0, 2), [4, 4]);
  });
});

test('a temporary file name cannot be planted: a symlink there is never written through', (t) => {
  const dir = tmp(), victim = join(dir, 'victim');
  writeFileSync(victim, 'precious');
  // every name the old scheme (<file>.tmp-<pid>) could have used
  symlinkSync(victim, join(dir, `model.safetensors.tmp-${process.pid}`));
  scope(() => saveSafetensors(join(dir, 'model.safetensors'), new Map([['a', tensor([1, 2])]])));
  t.is(readFileSync(victim, 'utf8'), 'precious');
  t.false(lstatSync(join(dir, 'model.safetensors')).isSymbolicLink());
});

test('a shard index that names an index is refused (it recursed without end); a folder is not a checkpoint file', (t) => {
  const dir = tmp();
  writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify({ weight_map: { x: 'model.safetensors.index.json' } }));
  t.throws(() => loadCheckpoint(dir), { instanceOf: CheckpointError, message: /is a shard index, not a shard/ });
  const other = tmp();
  mkdirSync(join(other, 'model.safetensors'));
  t.throws(() => loadCheckpoint(other), { instanceOf: CheckpointError, message: /model\.safetensors: is not a regular file/ });
});

test('zip: a corrupted storage fails its CRC-32; a stored entry whose sizes lie is refused', (t) => {
  const dir = tmp(), src = readFileSync(TORCH);
  let key = '';
  {
    using c = TorchCheckpoint.open(TORCH);
    key = c.tensors.get('transposed')!.storage.key;
  }
  const name = Buffer.from(`state_dict/data/${key}`);
  const cen = src.lastIndexOf(name) - 46, local = src.indexOf(name) - 30;
  t.is(src.readUInt32LE(cen), 0x02014b50);
  t.is(src.readUInt32LE(local), 0x04034b50);
  const dataAt = local + 30 + src.readUInt16LE(local + 26) + src.readUInt16LE(local + 28);
  const flipped = Buffer.from(src);
  flipped[dataAt + 1] ^= 0x40;
  writeFileSync(join(dir, 'crc.bin'), flipped);
  t.throws(() => readTorchFile(join(dir, 'crc.bin')), { instanceOf: CheckpointError, message: /fails its CRC-32 check/ });
  const lie = Buffer.from(src);
  lie.writeUInt32LE(lie.readUInt32LE(cen + 24) + 8, cen + 24); // uncompressed size only
  writeFileSync(join(dir, 'lie.bin'), lie);
  t.throws(() => readTorchFile(join(dir, 'lie.bin')), { instanceOf: CheckpointError, message: /stored entry .* says \d+ bytes but holds \d+/ });
});

test('pickle: an integer of more than 16 bytes is refused at once (a 2 MB one took minutes)', (t) => {
  const n = 200_000, p = new Uint8Array(1 + 4 + n + 1);
  p[0] = 0x8b; // LONG4
  new DataView(p.buffer).setUint32(1, n, true);
  p[p.length - 1] = 0x2e; // STOP
  const t0 = performance.now();
  t.throws(() => unpickle(p, { globals: new Map() }, 'long'), { instanceOf: CheckpointError, message: /an integer of 200000 bytes/ });
  t.true(performance.now() - t0 < 1000);
});

test('a model folder: an integer weight and LoRA matrices in the base checkpoint are refused by name', (t) => {
  const model = tinyOwl();
  const dir = tmp();
  try {
    scope(() => {
      const params = new Map(model.params);
      const norm = 'language_model.model.norm.weight';
      saveCheckpoint(join(dir, 'int'), new Map([...params, [norm, tensor(new Int32Array(16).fill(1))]]), { config: model.config });
      t.throws(() => loadModel(join(dir, 'int')), { instanceOf: CheckpointError, message: /norm\.weight.*is i32; a weight must be a float tensor/ });
      const lora = 'language_model.model.layers.0.self_attn.q_proj.lora_A.weight';
      saveCheckpoint(join(dir, 'lora'), new Map([...params, [lora, tensor(new Float32Array(4 * 16), [4, 16])]]), { config: model.config });
      t.throws(() => loadModel(join(dir, 'lora')), { instanceOf: CheckpointError, message: /holds LoRA matrices .*load them as an adapter/ });
      // tensors the model has no use for are skipped, not read and kept
      saveCheckpoint(join(dir, 'extra'), new Map([...params, ['junk', tensor([1, 2, 3])]]), { config: model.config });
      const m = loadModel(join(dir, 'extra'));
      t.false(m.params.has('junk'));
      t.true(existsSync(join(dir, 'extra', 'config.json')));
      for (const p of m.params.values()) p.dispose();
    });
  } finally {
    for (const p of model.params.values()) p.dispose();
  }
});

test('absurd sizes in config.json, and tokenizer.json ids outside 0..n-1, are refused before any work', (t) => {
  t.throws(() => parseOwlConfig({ text_config: { hidden_size: 16, num_attention_heads: 2, num_hidden_layers: 1e8, intermediate_size: 8 } }),
    { instanceOf: ConfigError, message: /num_hidden_layers 100000000 is larger than any model owlet can hold/ });
  const dir = tmp();
  const tok = (vocab: Record<string, number>) => {
    const f = join(dir, `t${Object.values(vocab).join('_')}.json`);
    writeFileSync(f, JSON.stringify({ version: '1.0', model: { type: 'WordLevel', vocab, unk_token: 'a' }, added_tokens: [] }));
    return f;
  };
  t.throws(() => loadTokenizerJson(tok({ a: 0, b: -5 })), { instanceOf: TokenizerError, message: /token "b" has id -5/ });
  t.throws(() => loadTokenizerJson(tok({ a: 0, b: 2 ** 31 })), { instanceOf: TokenizerError, message: /id 2147483648/ });
  t.throws(() => loadTokenizerJson(tok({ a: 0, b: 7 })), { instanceOf: TokenizerError, message: /not 0\.\.1 \(the largest is 7\)/ });
});
