// Sharded safetensors (write split by size, read through the index), checkpoint directories of any layout with
// canonical names, broken indexes, and a peak-memory check that loading never holds a file twice.
import test from 'ava';
import { mkdtempSync, readdirSync, readFileSync, writeFileSync, rmSync, existsSync, statSync, copyFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { scope, tensor, type Tensor } from '../../lib/tensor/index.ts';
import { saveSafetensors, planShards } from '../../lib/model/io/sharded.ts';
import { readSafetensorsFile, writeSafetensorsFile } from '../../lib/model/io/safetensors.ts';
import { loadCheckpoint, loadSafetensors, saveCheckpoint } from '../../lib/model/io/checkpoint.ts';
import { expectedKeys } from '../../lib/model/io/keys.ts';
import { readConfig } from '../../lib/model/io/config.ts';
import { CheckpointError } from '../../lib/model/io/errors.ts';
import { FIXTURE, rawHeader } from './helpers.ts';

const tmp = () => mkdtempSync(join(tmpdir(), 'owlet-shard-'));
const bytes = (t: Tensor) => Buffer.from(t.handle.read());

test('planShards: greedy in order, oversize tensors alone, never an empty shard', (t) => {
  t.deepEqual(planShards([['a', 4], ['b', 4], ['c', 4]], 8), [['a', 'b'], ['c']]);
  t.deepEqual(planShards([['a', 2], ['big', 20], ['b', 2]], 8), [['a'], ['big'], ['b']]);
  t.deepEqual(planShards([], 8), [[]]);
  t.throws(() => planShards([['a', 1]], 0), { instanceOf: CheckpointError });
});

test('the fixture written in shards reads back bit-identically through the index and through the directory', (t) => {
  const dir = tmp();
  scope(() => {
    const m = readSafetensorsFile(join(FIXTURE, 'model.safetensors')).tensors;
    const files = saveSafetensors(join(dir, 'model.safetensors'), m, { maxShardBytes: 400_000 });
    const shards = files.filter((f) => !f.endsWith('.json')).map((f) => f.slice(dir.length + 1));
    const n = shards.length;
    t.true(n >= 4, `${n} shards`);
    t.deepEqual(shards, Array.from({ length: n }, (_, i) => `model-${String(i + 1).padStart(5, '0')}-of-${String(n).padStart(5, '0')}.safetensors`));
    const index = JSON.parse(readFileSync(join(dir, 'model.safetensors.index.json'), 'utf8'));
    t.deepEqual(Object.keys(index.weight_map).sort(), [...m.keys()].sort());
    let total = 0;
    for (const s of shards) {
      const { header } = rawHeader(join(dir, s));
      const size = Object.values(header).reduce((a, h) => a + h.data_offsets[1] - h.data_offsets[0], 0);
      total += size;
      const largest = Math.max(...Object.values(header).map((h) => h.data_offsets[1] - h.data_offsets[0]));
      t.true(size <= 400_000 || Object.keys(header).length === 1, `${s}: ${size} bytes, largest ${largest}`);
      for (const k of Object.keys(header)) t.is(index.weight_map[k], s);
    }
    t.is(index.metadata.total_size, total);
    for (const back of [loadSafetensors(dir), loadSafetensors(join(dir, 'model.safetensors.index.json')), loadCheckpoint(dir)]) {
      t.is(back.size, m.size);
      for (const [k, v] of m) t.true(bytes(back.get(k)!).equals(bytes(v)), k);
    }
    // expected keys checked across shards before reading
    t.is(loadCheckpoint(dir, { expected: expectedKeys(readConfig(FIXTURE)), strict: true }).size, m.size);

    // Saving unsharded into the same place removes the stale index; saving sharded again removes the single file.
    saveSafetensors(join(dir, 'model.safetensors'), m);
    t.false(existsSync(join(dir, 'model.safetensors.index.json')));
    saveSafetensors(join(dir, 'model.safetensors'), m, { maxShardBytes: 400_000 });
    t.false(existsSync(join(dir, 'model.safetensors')));
    t.false(readdirSync(dir).some((f) => f.includes('.tmp-')));
  });
});

test('saveCheckpoint writes a model directory (weights + config.json) that loads back against expectedKeys', (t) => {
  const dir = join(tmp(), 'nested', 'model');
  const config = readConfig(FIXTURE);
  scope(() => {
    const m = readSafetensorsFile(join(FIXTURE, 'model.safetensors')).tensors;
    const files = saveCheckpoint(dir, m, { config, maxShardBytes: 1_000_000 });
    t.deepEqual(files.map((f) => f.slice(dir.length + 1)), ['model-00001-of-00002.safetensors',
      'model-00002-of-00002.safetensors', 'model.safetensors.index.json', 'config.json']);
    // As transformers' save_pretrained writes them: {"format": "pt"} in every file (transformers before 4.30 fails
    // on a file without it), only total_size in the index, the dtype and the model class in config.json.
    for (const f of files.slice(0, 2)) t.deepEqual(rawHeader(f).metadata, { format: 'pt' }, f);
    t.deepEqual(Object.keys(JSON.parse(readFileSync(join(dir, 'model.safetensors.index.json'), 'utf8')).metadata), ['total_size']);
    const written = readConfig(dir);
    t.is(written.extra.torch_dtype, 'float32');
    t.deepEqual(written.extra.architectures, ['MplugOwlForConditionalGeneration']);
    t.deepEqual({ ...written, extra: {} }, { ...config, extra: {} });
    const back = loadCheckpoint(dir, { expected: expectedKeys(readConfig(dir)), strict: true });
    for (const [k, v] of m) t.true(bytes(back.get(k)!).equals(bytes(v)), k);
    saveCheckpoint(dir, m, { config, dtype: 'bf16' });
    t.deepEqual(rawHeader(join(dir, 'model.safetensors')).metadata, { format: 'pt' });
    t.is(readConfig(dir).extra.torch_dtype, 'bfloat16');
    // A directory given to saveSafetensors means its model.safetensors.
    saveSafetensors(dir, m);
    t.true(existsSync(join(dir, 'model.safetensors')));
  });
});

test('broken indexes: missing shard, tensor absent from its shard, path escaping the directory', (t) => {
  const dir = tmp();
  scope(() => {
    const m = new Map([['a', tensor([1, 2, 3])], ['b', tensor([4, 5])], ['c', tensor([6])]]);
    saveSafetensors(join(dir, 'model.safetensors'), m, { maxShardBytes: 12 });
  });
  const idxPath = join(dir, 'model.safetensors.index.json');
  const idx = JSON.parse(readFileSync(idxPath, 'utf8'));
  t.deepEqual(idx.weight_map, { a: 'model-00001-of-00002.safetensors', b: 'model-00002-of-00002.safetensors',
    c: 'model-00002-of-00002.safetensors' });

  writeFileSync(idxPath, JSON.stringify({ weight_map: { ...idx.weight_map, d: 'model-00001-of-00002.safetensors' } }));
  const e1 = t.throws(() => loadCheckpoint(dir), { instanceOf: CheckpointError, message: /listed in model\.safetensors\.index\.json but missing from this shard/ });
  t.is(e1!.tensor, 'd');
  t.is(e1!.file, join(dir, 'model-00001-of-00002.safetensors'));

  writeFileSync(idxPath, JSON.stringify(idx));
  rmSync(join(dir, 'model-00002-of-00002.safetensors'));
  const e2 = t.throws(() => loadCheckpoint(dir), { instanceOf: CheckpointError, message: /shard model-00002-of-00002\.safetensors .* does not exist/ });
  t.is(e2!.tensor, 'b');

  writeFileSync(idxPath, JSON.stringify({ weight_map: { a: '../../etc/passwd' } }));
  t.throws(() => loadCheckpoint(dir), { instanceOf: CheckpointError, message: /not a shard file name in the same directory/ });
  writeFileSync(idxPath, '{"metadata": {}}');
  t.throws(() => loadCheckpoint(dir), { instanceOf: CheckpointError, message: /no "weight_map"/ });
  t.throws(() => loadCheckpoint(tmp()), { instanceOf: CheckpointError, message: /no checkpoint found \(looked for model\.safetensors, model\.safetensors\.index\.json, pytorch_model\.bin/ });
});

test('loadCheckpoint gives canonical names: PeftModel prefixes, .default. LoRA keys, rotary buffers unread', (t) => {
  const dir = tmp();
  scope(() => {
    const q = 'language_model.model.layers.0.self_attn.q_proj';
    writeSafetensorsFile(join(dir, 'model.safetensors'), new Map([
      [`base_model.model.${q}.weight`, tensor([1, 2, 3, 4], [2, 2])],
      [`base_model.model.${q}.lora_A.default.weight`, tensor([5, 6], [1, 2])],
      [`base_model.model.${q}.lora_B.default.weight`, tensor([7, 8], [2, 1])],
      ['base_model.model.language_model.model.layers.0.self_attn.rotary_emb.inv_freq', tensor([1], [1])],
    ]));
    const m = loadCheckpoint(dir, { expected: new Map([[`${q}.weight`, [2, 2]]]) });
    t.deepEqual([...m.keys()], [`${q}.weight`, `base_model.model.${q}.lora_A.weight`, `base_model.model.${q}.lora_B.weight`]);
    t.is(m.get(`${q}.weight`)!.name, `${q}.weight`);
    const e = t.throws(() => loadCheckpoint(dir, { expected: new Map([[`${q}.weight`, [4]]]) }), { instanceOf: CheckpointError });
    t.is(e!.tensor, `${q}.weight`);

    writeSafetensorsFile(join(dir, 'model.safetensors'), new Map([
      [`${q}.lora_A.weight`, tensor([5, 6], [1, 2])], [`base_model.model.${q}.lora_A.default.weight`, tensor([5, 6], [1, 2])],
    ]));
    t.throws(() => loadCheckpoint(dir), { instanceOf: CheckpointError, message: /name the same tensor/ });
  });
});

test('a torch pytorch_model.bin in a directory is found and read', (t) => {
  const dir = tmp();
  copyFileSync(new URL('../fixtures/torch/state_dict.bin', import.meta.url).pathname, join(dir, 'pytorch_model.bin'));
  scope(() => {
    const m = loadCheckpoint(dir, { filter: (n) => n === 'weight' || n === 'bf16', dtype: 'f32' });
    t.deepEqual([...m.keys()], ['weight', 'bf16']);
    t.is(m.get('bf16')!.dtype, 'f32');
  });
});

// Peak memory: a child process loads a 96 MB file; its peak RSS may grow by the file once (native tensors) plus one
// tensor of scratch, not twice the file. Reported numbers are in the test log.
test('loading a 96 MB safetensors file raises peak RSS by about the file size, not twice', (t) => {
  const dir = tmp();
  const file = join(dir, 'big.safetensors');
  const per = 8 * 1024 * 1024 / 4, count = 12;
  scope(() => {
    const m = new Map<string, Tensor>();
    for (let i = 0; i < count; i++) m.set(`t${i}`, tensor(new Float32Array(per).fill(i), [per]));
    writeSafetensorsFile(file, m);
  });
  const size = statSync(file).size;
  const script = `
    import { readSafetensorsFile } from ${JSON.stringify(new URL('../../lib/model/io/safetensors.ts', import.meta.url).pathname)};
    import { tensor } from ${JSON.stringify(new URL('../../lib/tensor/index.ts', import.meta.url).pathname)};
    tensor([1]).dispose(); // load the addon first
    const before = process.memoryUsage().rss;
    const m = readSafetensorsFile(${JSON.stringify(file)}).tensors;
    const peak = Math.max(process.resourceUsage().maxRSS * 1024, process.memoryUsage().rss);
    console.log(JSON.stringify({ before, peak, held: process.memoryUsage().rss, n: m.size }));`;
  const out = execFileSync(process.execPath, ['--import=tsx', '--input-type=module', '-e', script], { encoding: 'utf8' });
  const { before, peak, held, n } = JSON.parse(out.trim().split('\n').at(-1)!);
  t.is(n, count);
  const mib = (x: number) => `${(x / 2 ** 20).toFixed(1)} MiB`;
  t.log(`file ${mib(size)}: peak RSS ${mib(peak - before)} above the RSS before loading, ${mib(held - before)} held after`);
  t.true(held - before > size * 0.9, 'the tensors are resident'); // the measurement can see the file once
  t.true(peak - before < size * 1.4, `peak RSS grew ${peak - before} bytes for a ${size}-byte file`);
  rmSync(dir, { recursive: true });
});
