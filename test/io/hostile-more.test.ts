// More damaged, hostile or merely unlucky inputs (the format audit of session 10). Each case below once lost a good
// checkpoint, hung the process, or loaded something other than what the file holds without a word.
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import { scope, tensor } from '../../lib/tensor/index.ts';
import { saveSafetensors } from '../../lib/model/io/sharded.ts';
import { readSafetensorsFile } from '../../lib/model/io/safetensors.ts';
import { readTorchFile } from '../../lib/model/io/torch_pickle.ts';
import { loadAdapter, saveAdapter } from '../../lib/model/io/peft.ts';
import { readConfig } from '../../lib/model/io/config.ts';
import { loadCheckpoint, saveCheckpoint } from '../../lib/model/io/checkpoint.ts';
import { defaultAdapterConfig } from '../../lib/model/io/config.ts';
import { CheckpointError, ConfigError } from '../../lib/model/io/errors.ts';
import { tinyOwl } from '../helpers/tiny-owl.ts';
import { craftSafetensors } from './helpers.ts';

const tmp = () => mkdtempSync(join(tmpdir(), 'owlet-hostile2-'));
const ones = (x: number) => tensor(new Float32Array(64).fill(x));
const firstValues = (dir: string) => scope(() => [...loadCheckpoint(dir)].map(([k, v]) => `${k}=${v.toArray()[0]}`));

test('a sharded save that fails half-way leaves the previous checkpoint whole, with nothing of its own behind', (t) => {
  scope(() => {
    const gone = ones(9);
    gone.dispose(); // the second shard's save fails on it, after the first shard is complete
    const failing = new Map([['a', ones(2)], ['b', gone], ['c', ones(2)]]);

    // sharded over sharded: the old shards were overwritten one by one and the old index removed first, so the good
    // checkpoint on disk was lost
    const dir = tmp(), path = join(dir, 'model.safetensors');
    saveSafetensors(path, new Map([['a', ones(1)], ['b', ones(1)], ['c', ones(1)]]), { maxShardBytes: 256 });
    const before = readdirSync(dir).sort();
    t.throws(() => saveSafetensors(path, failing, { maxShardBytes: 256 }), { instanceOf: CheckpointError, message: /'b'.*disposed/ });
    t.deepEqual(readdirSync(dir).sort(), before);
    t.deepEqual(firstValues(dir), ['a=1', 'b=1', 'c=1']);

    // sharded over a single file: the first new shard stayed behind beside the old file
    const single = tmp();
    saveSafetensors(join(single, 'model.safetensors'), new Map([['a', ones(1)]]));
    t.throws(() => saveSafetensors(join(single, 'model.safetensors'), failing, { maxShardBytes: 256 }));
    t.deepEqual(readdirSync(single), ['model.safetensors']);

    // a folder where a shard must go is found before anything is replaced (it failed at the rename, half-way)
    const blocked = tmp();
    saveSafetensors(join(blocked, 'model.safetensors'), new Map([['a', ones(1)], ['b', ones(1)]]), { maxShardBytes: 256 });
    mkdirSync(join(blocked, 'model-00003-of-00003.safetensors'));
    t.throws(() => saveSafetensors(join(blocked, 'model.safetensors'), new Map([['a', ones(2)], ['b', ones(2)], ['c', ones(2)]]),
      { maxShardBytes: 256 }), { instanceOf: CheckpointError, message: /model-00003-of-00003\.safetensors: is in the way/ });
    t.deepEqual(firstValues(blocked), ['a=1', 'b=1']);

    // and a save that succeeds still replaces everything
    saveSafetensors(path, new Map([['a', ones(3)], ['b', ones(3)]]), { maxShardBytes: 256 });
    t.deepEqual(firstValues(dir), ['a=3', 'b=3']);
  });
});

test('weights and their config are saved as a pair: a failed save never leaves new weights beside the old config', (t) => {
  // (a config that cannot be written stands in for a disk that fills up between the two files)
  const unwritable = { extra: { bad: 1n } as Record<string, unknown> };
  scope(() => {
    const dir = tmp();
    const lora = (x: number) => new Map([['base_model.model.x.q_proj.lora_A.weight', tensor(new Float32Array(32).fill(x), [2, 16])]]);
    saveAdapter(dir, lora(1), defaultAdapterConfig({ r: 2, loraAlpha: 4 }));
    t.throws(() => saveAdapter(dir, lora(2), { ...defaultAdapterConfig({ r: 2, loraAlpha: 64 }), ...unwritable }));
    const a = loadAdapter(dir); // the new weights were loaded under the old lora_alpha
    t.deepEqual([a.config.loraAlpha, a.tensors.values().next().value!.toArray()[0]], [4, 1]);
    t.deepEqual(readdirSync(dir).sort(), ['adapter_config.json', 'adapter_model.safetensors']);
  });
  const model = tinyOwl();
  try {
    scope(() => {
      const dir = tmp();
      saveCheckpoint(dir, model.params, { config: model.config });
      const sevens = new Map([...model.params].map(([k, v]) => [k, tensor(new Float32Array(v.numel).fill(7), [...v.shape])]));
      t.throws(() => saveCheckpoint(dir, sevens, { config: { ...model.config, ...unwritable } }));
      t.is(loadCheckpoint(dir).get('language_model.model.norm.weight')!.toArray()[0], 1);
      t.deepEqual(readConfig(dir).text, model.config.text);
      t.deepEqual(readdirSync(dir).sort(), ['config.json', 'model.safetensors']);
    });
  } finally {
    for (const p of model.params.values()) p.dispose();
  }
});

test('a target_modules regex that backtracks catastrophically is refused in bounded time, naming the file', (t) => {
  const model = tinyOwl();
  try {
    const dir = tmp();
    const config = { ...defaultAdapterConfig({ r: 2 }), targetModules: '(.*)*z' };
    scope(() => saveAdapter(dir, new Map([['base_model.model.x.q_proj.lora_A.weight', tensor(new Float32Array(32), [2, 16])]]), config));
    const t0 = performance.now();
    // (this took hours: 2^46 backtracking steps on a 46-character module name)
    t.throws(() => loadAdapter(dir, { model: model.config }), {
      instanceOf: ConfigError, message: /adapter_config\.json: target_modules "\(\.\*\)\*z" did not finish matching .* backtracks catastrophically/,
    });
    t.true(performance.now() - t0 < 5000);
  } finally {
    for (const p of model.params.values()) p.dispose();
  }
});

test('safetensors: a tensor named twice, or bytes no tensor owns, are refused (one of two tensors was dropped silently)', (t) => {
  const dir = tmp();
  const data = new Uint8Array(new Float32Array([1, 2]).buffer);
  const entry = (b: number) => `{"dtype":"F32","shape":[1],"data_offsets":[${b},${b + 4}]}`;
  const json = new TextEncoder().encode(`{"a":${entry(0)},"a":${entry(4)}}`);
  const dup = new Uint8Array(8 + json.length + 8);
  new DataView(dup.buffer).setBigUint64(0, BigInt(json.length), true);
  dup.set(json, 8);
  dup.set(data, 8 + json.length);
  writeFileSync(join(dir, 'dup.safetensors'), dup);
  t.throws(() => readSafetensorsFile(join(dir, 'dup.safetensors')),
    { instanceOf: CheckpointError, message: /dup\.safetensors: bytes \[0, 4\) of the data section belong to no tensor.*named twice/ });

  writeFileSync(join(dir, 'tail.safetensors'), craftSafetensors({ a: JSON.parse(entry(0)) }, data));
  t.throws(() => readSafetensorsFile(join(dir, 'tail.safetensors')),
    { instanceOf: CheckpointError, message: /bytes \[4, 8\) of the data section belong to no tensor \(after the last tensor\)/ });

  // out of order in the header, contiguous in the data: fine
  writeFileSync(join(dir, 'ok.safetensors'), craftSafetensors({ b: JSON.parse(entry(4)), a: JSON.parse(entry(0)),
    e: { dtype: 'F32', shape: [0, 3], data_offsets: [8, 8] } }, data));
  scope(() => {
    const m = readSafetensorsFile(join(dir, 'ok.safetensors')).tensors;
    t.deepEqual([...m].map(([k, v]) => `${k}=${[...v.toArray()]}`), ['b=2', 'a=1', 'e=']);
  });
});

test('a folder or a FIFO given as a checkpoint file is refused at once (a FIFO blocked the open forever)', (t) => {
  const dir = tmp();
  const fifo = join(dir, 'model.safetensors');
  execFileSync('mkfifo', [fifo]);
  mkdirSync(join(dir, 'folder.bin'));
  for (const read of [readSafetensorsFile, readTorchFile]) {
    for (const f of [fifo, join(dir, 'folder.bin')]) {
      t.throws(() => read(f), { instanceOf: CheckpointError, message: /is not a regular file/ }, `${read.name} ${f}`);
    }
  }
});

/** A zip of stored entries, as torch.save writes them. */
function storedZip(entries: [string, Uint8Array][]): Uint8Array {
  const parts: Buffer[] = [], central: Buffer[] = [];
  let at = 0;
  for (const [name, data] of entries) {
    const n = Buffer.from(name), crc = crc32(data) >>> 0;
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt32LE(crc, 14);
    local.writeUInt32LE(data.length, 18);
    local.writeUInt32LE(data.length, 22);
    local.writeUInt16LE(n.length, 26);
    const cen = Buffer.alloc(46);
    cen.writeUInt32LE(0x02014b50, 0);
    cen.writeUInt32LE(crc, 16);
    cen.writeUInt32LE(data.length, 20);
    cen.writeUInt32LE(data.length, 24);
    cen.writeUInt16LE(n.length, 28);
    cen.writeUInt32LE(at, 42);
    parts.push(local, n, Buffer.from(data));
    central.push(cen, n);
    at += 30 + n.length + data.length;
  }
  const cd = Buffer.concat(central), eocd = Buffer.alloc(22);
  eocd.writeUInt32LE(0x06054b50, 0);
  eocd.writeUInt16LE(entries.length, 8);
  eocd.writeUInt16LE(entries.length, 10);
  eocd.writeUInt32LE(cd.length, 12);
  eocd.writeUInt32LE(at, 16);
  return Buffer.concat([...parts, cd, eocd]);
}

test('torch: a training checkpoint ({"model": state_dict, …}) is refused by name, not loaded as no tensors', (t) => {
  const s = (x: string) => { const b = Buffer.from(x); return [0x58, b.length, 0, 0, 0, ...b]; }; // BINUNICODE
  const g = (m: string, n: string) => [0x63, ...Buffer.from(`${m}\n${n}\n`)]; // GLOBAL
  // {'model': {'w': _rebuild_tensor_v2(storage('0', FloatStorage, 4 elements), 0, (4,), (1,))}, 'epoch': 3}
  const pkl = Uint8Array.from([0x80, 2, 0x7d, ...s('model'), 0x7d, ...s('w'), ...g('torch._utils', '_rebuild_tensor_v2'),
    0x28, 0x28, ...s('storage'), ...g('torch', 'FloatStorage'), ...s('0'), ...s('cpu'), 0x4b, 4, 0x74, 0x51,
    0x4b, 0, 0x4b, 4, 0x85, 0x4b, 1, 0x85, 0x74, 0x52, 0x73, 0x73, ...s('epoch'), 0x4b, 3, 0x73, 0x2e]);
  const f = join(tmp(), 'pytorch_model.bin');
  writeFileSync(f, storedZip([['archive/data.pkl', pkl], ['archive/data/0', new Uint8Array(new Float32Array([1, 2, 3, 4]).buffer)]]));
  t.throws(() => readTorchFile(f), {
    instanceOf: CheckpointError, message: /pytorch_model\.bin: holds no tensors at its top level, but its key 'model' is a dict of tensors/,
  });
  t.true(existsSync(f));
});
