import test from 'ava';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { applyOverride, gradAccumFor, loadConfig, modelSizes, parseConfigText, parseOverride, totalSteps, validateConfig } from '../../lib/train/config.ts';
import { ConfigError, UsageError } from '../../lib/train/errors.ts';

const tmp = mkdtempSync(join(tmpdir(), 'owlet-config-'));
const write = (name: string, text: string) => { const p = join(tmp, name); writeFileSync(p, text); return p; };

const MIN = `
run: { out_dir: runs/x }
model: { preset: mplug-owl-llama-7b }
stage: { id: 1, train: [vision, queries, abstractor] }
data: { train: [{ path: a.jsonl }], max_length: 32, micro_batch: 2 }
optimizer: { lr: 1.0e-4 }
schedule: { type: linear, warmup_steps: 2 }
training: { steps: 10 }
`;

test('the shipped 7B configs validate and carry the recipes', (t) => {
  const s1 = loadConfig('configs/stage1-7b.yaml');
  t.deepEqual(s1.stage.train, ['vision', 'queries', 'abstractor']);
  t.is(s1.optimizer.lr, 1e-4);
  t.deepEqual(s1.optimizer.betas, [0.9, 0.98]);
  t.is(s1.optimizer.weight_decay, 0.1);
  t.deepEqual([s1.schedule.type, s1.schedule.warmup_steps, s1.training.steps], ['cosine', 2000, 50000]);
  const s2 = loadConfig('configs/stage2-7b.yaml');
  t.deepEqual(s2.stage.train, ['lora']);
  t.deepEqual(s2.stage.lora, { r: 8, alpha: 32, dropout: 0.05, targets: ['q_proj', 'v_proj'] });
  t.deepEqual([s2.optimizer.lr, s2.optimizer.weight_decay, s2.optimizer.eps], [2e-5, 1e-4, 1e-8]);
  t.deepEqual(s2.optimizer.betas, [0.9, 0.999]);
  t.deepEqual([s2.schedule.type, s2.schedule.warmup_steps, s2.training.clip], ['linear', 50, 1]);
  t.is(s2.data.max_length, 2048);
  t.is(s2.training.epochs, 3);
  for (const f of ['demo-warmup', 'demo-stage1', 'demo-stage2']) t.notThrows(() => loadConfig(`configs/${f}.yaml`), f);
});

test('defaults fill in; sizes come from the preset', (t) => {
  const c = validateConfig(parseConfigText(MIN));
  t.is(c.run.seed, 42);
  t.is(c.training.grad_accum, 1);
  t.is(c.data.on_corrupt, 'skip');
  t.is(c.data.image.size, 224);
  t.is(c.logging.keep_last, 3);
  t.is(modelSizes(c).text_config.hidden_size, 4096);
});

test('an invalid config is rejected with every field path and reason on one line', (t) => {
  const bad = MIN.replace('lr: 1.0e-4', 'lr: -1').replace('micro_batch: 2', 'micro_batch: two')
    .replace('[vision, queries, abstractor]', '[vision, lora]').replace('training: { steps: 10 }', 'training: { steps: 10, epochs: 2 }');
  const p = write('bad.yaml', bad + 'extra_section: 1\n');
  const e = t.throws(() => loadConfig(p), { instanceOf: ConfigError })!;
  t.notRegex(e.message, /\n/);
  t.regex(e.message, /optimizer\.lr: Too small/);
  t.regex(e.message, /data\.micro_batch: Invalid input: expected number, received string/);
  t.regex(e.message, /stage\.lora: required when stage\.train includes 'lora'/);
  t.regex(e.message, /training: give exactly one of training\.steps and training\.epochs/);
  t.regex(e.message, /Unrecognized key: "extra_section"/);
  t.regex(e.message, new RegExp(p.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')));
});

test('cross-field checks: model source, warm-up vs steps, min_lr vs lr, regexes', (t) => {
  const cases: [string, RegExp][] = [
    [MIN.replace('{ preset: mplug-owl-llama-7b }', '{ preset: mplug-owl-llama-7b, config: x }'), /model: give exactly one of model\.preset, model\.config, model\.sizes \(got preset, config\)/],
    [MIN.replace('warmup_steps: 2', 'warmup_steps: 20'), /schedule\.warmup_steps: exceeds training\.steps \(10\)/],
    [MIN.replace('warmup_steps: 2', 'warmup_steps: 2, min_lr: 1'), /schedule\.min_lr: exceeds optimizer\.lr/],
    [MIN.replace('lr: 1.0e-4', 'lr: 1.0e-4, no_decay: ["(bias"]'), /optimizer\.no_decay\.0: not a regular expression/],
    [MIN.replace('out_dir: runs/x', 'out_dir: runs/x, device: gpu'), /run\.device: must be auto, cpu, cuda or cuda:N/],
    [MIN.replace('max_length: 32', 'max_length: 32, image: { crop_scale: [0.9, 0.5] }'), /data\.image\.crop_scale: min exceeds max/],
    [MIN.replace('id: 1', 'id: 3'), /stage\.id: Invalid option: expected one of 0\|1\|2/],
  ];
  for (const [text, re] of cases) {
    const e = t.throws(() => validateConfig(parseConfigText(text)), { instanceOf: ConfigError });
    t.regex(e!.message, re);
  }
  t.throws(() => parseConfigText('run: [1, 2'), { instanceOf: ConfigError, message: /not valid YAML \(line/ });
  t.throws(() => parseConfigText('- 1\n- 2\n'), { instanceOf: ConfigError, message: /top level must be a mapping/ });
  t.throws(() => loadConfig(join(tmp, 'missing.yaml')), { instanceOf: ConfigError, message: /cannot read config .*: no such file$/ });
});

test('--set overrides: dotted paths, typed values, lists, deletion', (t) => {
  const p = write('min.yaml', MIN);
  const c = loadConfig(p, ['optimizer.lr=3e-5', 'training.grad_accum=4', 'data.shuffle=false', 'stage.train=[vision]',
    'data.train.0.weight=2.5', 'run.name=my run', 'logging.peak_flops=1e12', 'data.eval.0.path=dev.jsonl']);
  t.is(c.optimizer.lr, 3e-5);
  t.is(c.training.grad_accum, 4);
  t.false(c.data.shuffle);
  t.deepEqual(c.stage.train, ['vision']);
  t.is(c.data.train[0].weight, 2.5);
  t.is(c.run.name, 'my run');
  t.is(c.logging.peak_flops, 1e12);
  t.is(c.data.eval[0].path, 'dev.jsonl');
  // an override is validated like the file: the bad value names its field
  t.throws(() => loadConfig(p, ['optimizer.lr=fast']), { instanceOf: ConfigError, message: /optimizer\.lr: Invalid input: expected number, received string/ });
  t.throws(() => loadConfig(p, ['optimizer.learning_rate=1']), { instanceOf: ConfigError, message: /optimizer: Unrecognized key: "learning_rate"/ });
  // deleting a key brings back its default
  t.is(loadConfig(p, ['run.out_dir=x', 'training.grad_accum=']).training.grad_accum, 1);
  t.throws(() => parseOverride('noequals'), { instanceOf: UsageError });
  t.throws(() => parseOverride('a..b=1'), { instanceOf: UsageError });
  t.throws(() => parseOverride('a=[1,'), { instanceOf: UsageError, message: /not valid YAML/ });
  const raw: Record<string, unknown> = { a: 1 };
  t.throws(() => applyOverride(raw, ['a', 'b'], 2), { instanceOf: UsageError, message: /'a' is a number, not a section/ });
  applyOverride(raw, ['x', 'y', 0, 'z'], 3);
  t.deepEqual(raw, { a: 1, x: { y: [{ z: 3 }] } });
});

test('steps from epochs follow the HF Trainer (ceil of epochs × updates per epoch)', (t) => {
  const c = validateConfig(parseConfigText(MIN.replace('{ steps: 10 }', '{ epochs: 3, grad_accum: 4 }')));
  t.is(totalSteps(c, 361481 / 1 | 0), Math.ceil(3 * Math.floor(361481 / 4)));
  t.is(totalSteps(c, 3), 3); // at least one update per epoch
  t.is(totalSteps(validateConfig(parseConfigText(MIN.replace('{ steps: 10 }', '{ epochs: 1.5 }'))), 7), 11);
  t.throws(() => totalSteps(c), { instanceOf: ConfigError, message: /needs the data length/ });
});

test('model sizes from a config.json directory or inline', (t) => {
  const dir = join(tmp, 'tiny-model');
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'config.json'), JSON.stringify({ model_type: 'mplug-owl', num_query_tokens: 8,
    vision_config: { hidden_size: 64, intermediate_size: 128, num_hidden_layers: 2, num_attention_heads: 4, image_size: 224, patch_size: 14 },
    visual_abstractor_config: { hidden_size: 64, intermediate_size: 96, num_hidden_layers: 2, num_attention_heads: 4 },
    text_config: { hidden_size: 96, intermediate_size: 160, num_hidden_layers: 2, num_attention_heads: 4, vocab_size: 512, model_type: 'llama' } }));
  const c = validateConfig(parseConfigText(MIN.replace('{ preset: mplug-owl-llama-7b }', `{ config: ${dir} }`)));
  const s = modelSizes(c);
  t.is(s.text_config.vocab_size, 512);
  t.is(s.num_query_tokens, 8);
  const missing = validateConfig(parseConfigText(MIN.replace('{ preset: mplug-owl-llama-7b }', `{ config: ${join(tmp, 'nope')} }`)));
  t.throws(() => modelSizes(missing), { instanceOf: ConfigError, message: /model\.config: no such file/ });
  writeFileSync(join(dir, 'config.json'), JSON.stringify({ vision_config: {} }));
  t.throws(() => modelSizes(c), { instanceOf: ConfigError, message: /config\.json' vision_config\.hidden_size: Invalid input/ });
  const inline = validateConfig(parseConfigText(MIN.replace('{ preset: mplug-owl-llama-7b }', `{ sizes: { vision_config: { hidden_size: 8, intermediate_size: 8, num_hidden_layers: 1, num_attention_heads: 2 },
    visual_abstractor_config: { hidden_size: 8, intermediate_size: 8, num_hidden_layers: 1, num_attention_heads: 2 },
    text_config: { hidden_size: 8, intermediate_size: 8, num_hidden_layers: 1, num_attention_heads: 2, vocab_size: 9 } } }`)));
  t.is(modelSizes(inline).num_query_tokens, 64);
});

test('training.global_batch fixes micro × accumulation × world: grad_accum is derived per world size', (t) => {
  const withGlobal = (g: number, extra: Record<string, unknown> = {}) => {
    const raw = parseConfigText(MIN) as { training: Record<string, unknown> };
    Object.assign(raw.training, { global_batch: g, ...extra });
    return validateConfig(raw);
  };
  const c = withGlobal(16); // micro_batch 2
  t.deepEqual([1, 2, 4, 8].map((w) => gradAccumFor(c, w)), [8, 4, 2, 1]);
  t.throws(() => gradAccumFor(c, 3), { instanceOf: ConfigError, message: 'training.global_batch=16 is not a multiple of data.micro_batch × world size = 2 × 3 = 6' });
  t.throws(() => gradAccumFor(c, 16), { instanceOf: ConfigError, message: /= 2 × 16 = 32/ });
  t.throws(() => withGlobal(15), { instanceOf: ConfigError, message: /training\.global_batch: must be a multiple of data\.micro_batch \(2\)/ });
  t.throws(() => withGlobal(16, { grad_accum: 4 }), { instanceOf: ConfigError, message: /training\.grad_accum: give training\.global_batch or training\.grad_accum, not both/ });
  const plain = validateConfig(parseConfigText(MIN));
  t.is(gradAccumFor(plain, 8), 1, 'without global_batch grad_accum is kept (the global batch grows with the ranks)');
  // epochs → steps counts this rank's micro-batches per epoch and its accumulation
  const e = withGlobal(16, { steps: undefined, epochs: 2 });
  t.is(totalSteps(e, 100, gradAccumFor(e, 2)), 50);
});
