// The run configuration: one YAML file, validated here before any work starts. Field names are snake_case like the
// YAML. Relative paths are resolved against the current working directory (the shipped configs are meant to run from
// the repository root), the same way `--set` values are. Stage behaviour is data: `stage.train` lists the parameter
// groups that train; everything else is frozen.
import { z } from 'zod';
import { OwlSizes, PRESET_NAMES } from './model-sizes.ts';

const posInt = z.number().int().positive();
const nonNegInt = z.number().int().nonnegative();
const unit = z.number().min(0).lt(1);
/** Micro-batches per optimizer step at most. A step keeps a seed per micro-batch: grad_accum 1e9 (a typo) ended in
 *  V8's fatal "JavaScript heap out of memory" 45 s into the first step, where any real recipe needs thousands. */
export const MAX_GRAD_ACCUM = 2 ** 20;

/** Parameter groups by official key prefix (see param-groups.ts). */
export { PARAM_GROUPS as GROUPS, type GroupName } from '../model/params.ts';
import { PARAM_GROUPS as GROUPS } from '../model/params.ts';
import { captionPromptProblem } from '../data/conversation.ts';

export const LoraConfig = z.strictObject({
  r: posInt.default(8),
  alpha: z.number().positive().default(32),
  dropout: unit.default(0.05),
  /** Module names (last path component) that get adapters. */
  targets: z.array(z.string().min(1)).min(1).default(['q_proj', 'v_proj']),
});

export const ModelConfig = z.strictObject({
  /** Built-in sizes by name. */
  preset: z.enum(PRESET_NAMES as [string, ...string[]]).optional(),
  /** A directory holding config.json (official field names), or that file. */
  config: z.string().min(1).optional(),
  /** Sizes inline, in the official config.json layout. */
  sizes: OwlSizes.optional(),
  /** Initial weights: a directory or .safetensors file in the official layout. */
  weights: z.string().min(1).optional(),
  /** A PEFT adapter directory to start the LoRA weights from. */
  adapter: z.string().min(1).optional(),
  /** Storage dtype of frozen weights and activations; trainables keep fp32 masters. */
  dtype: z.enum(['f32', 'bf16']).default('f32'),
  /** Recompute each LLM decoder layer in backward instead of keeping its activations (lib/tensor/checkpoint.ts):
   *  the same gradients, bit for bit, for a second forward of the LLM layers. */
  gradient_checkpointing: z.boolean().default(false),
  /** Fresh query tokens: zeros (the official code) or N(0, initializer_range), which makes the queries differ from
   *  the first step instead of waiting for the LLM's gradients to tell them apart (used when no weights are given). */
  query_init: z.enum(['zeros', 'normal']).default('zeros'),
  /** Attention-probability dropout of the abstractor (spec §4.1: active even when it is frozen). */
  abstractor_dropout: unit.optional(),
}).superRefine((m, ctx) => {
  const given = (['preset', 'config', 'sizes'] as const).filter((k) => m[k] !== undefined);
  if (given.length !== 1) {
    ctx.addIssue({ code: 'custom', path: [], message: `give exactly one of model.preset, model.config, model.sizes (got ${given.length ? given.join(', ') : 'none'})` });
  }
});

export const StageConfig = z.strictObject({
  /** 0: text-only LLM warm-up (demo), 1: multimodal pre-training, 2: instruction tuning. */
  id: z.literal([0, 1, 2]),
  /** Parameter groups that train; all others are frozen (still back-propagated through where needed). */
  train: z.array(z.enum(GROUPS)).min(1),
  lora: LoraConfig.optional(),
}).superRefine((s, ctx) => {
  if (new Set(s.train).size !== s.train.length) ctx.addIssue({ code: 'custom', path: ['train'], message: 'lists a group twice' });
  if (s.train.includes('lora') && !s.lora) ctx.addIssue({ code: 'custom', path: ['lora'], message: "required when stage.train includes 'lora'" });
  if (!s.train.includes('lora') && s.lora) ctx.addIssue({ code: 'custom', path: ['lora'], message: "given but stage.train does not include 'lora'" });
});

const DataFile = z.strictObject({
  path: z.string().min(1),
  /** Copies of this file per epoch: it contributes round(weight · records) samples (JsonlDataset), so its share of
   *  the mixture is weight · records / Σ weight · records — a 100-record file at weight 1 next to 20000 records
   *  at weight 5 is 0.1% of the samples, not a sixth. */
  weight: z.number().positive().default(1),
});

const CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073];
const CLIP_STD = [0.26862954, 0.26130258, 0.27577711];
const triple = z.tuple([z.number(), z.number(), z.number()]);

export const ImageConfig = z.strictObject({
  size: posInt.default(224),
  /** Training transform (spec §4.6): RandomResizedCrop + flip, or a plain squash-resize. */
  train_transform: z.enum(['random-resized-crop', 'resize']).default('random-resized-crop'),
  crop_scale: z.tuple([z.number().gt(0).max(1), z.number().gt(0).max(1)]).default([0.5, 1]),
  hflip: z.number().min(0).max(1).default(0.5),
  mean: triple.default(CLIP_MEAN as [number, number, number]),
  std: triple.default(CLIP_STD as [number, number, number]),
}).superRefine((c, ctx) => {
  if (c.crop_scale[0] > c.crop_scale[1]) ctx.addIssue({ code: 'custom', path: ['crop_scale'], message: 'min exceeds max' });
  if (c.std.some((s) => s <= 0)) ctx.addIssue({ code: 'custom', path: ['std'], message: 'must be positive' });
});

export const DataConfig = z.strictObject({
  train: z.array(DataFile).min(1),
  eval: z.array(DataFile).default([]),
  /** Where relative image paths of the JSONL files point. */
  images_dir: z.string().min(1).optional(),
  /** A tokenizer file or directory (tokenizer.model / tokenizer.json); default: the model's. */
  tokenizer: z.string().min(1).optional(),
  /** L: samples become L+1 token ids (spec §4.4). */
  max_length: posInt,
  /** Caption records become this conversation prefix (one `<image>`, ending with "AI: ") + the caption as the
   *  response; default: BOS + image + caption + EOS (spec §4.2: the official stage-1 prompt is unknown). */
  caption_prompt: z.string().min(1).refine((p) => captionPromptProblem(p) === null, { message: 'must hold one <image>, start with text and end with "AI: "' }).optional(),
  micro_batch: posInt,
  shuffle: z.boolean().default(true),
  drop_last: z.boolean().default(true),
  /** A sample that cannot be read or decoded: skip it (the official behaviour) or stop the run. */
  on_corrupt: z.enum(['skip', 'stop']).default('skip'),
  /** Worker threads that decode and tokenise ahead of the training step (0: on the main thread, between steps). */
  workers: nonNegInt.max(64).default(0),
  image: ImageConfig.prefault({}),
});

export const OptimizerConfig = z.strictObject({
  name: z.literal('adamw').default('adamw'),
  lr: z.number().positive(),
  betas: z.tuple([unit, unit]).default([0.9, 0.999]),
  eps: z.number().positive().default(1e-8),
  weight_decay: z.number().min(0).default(0),
  /** Parameters whose name matches one of these regular expressions get no weight decay. */
  no_decay: z.array(z.string()).default(['(^|\\.)bias$', 'norm[^.]*\\.weight$', 'ffn_ln\\.weight$', '^query_tokens$']),
}).superRefine((o, ctx) => {
  o.no_decay.forEach((p, i) => {
    try { new RegExp(p); } catch (e) { ctx.addIssue({ code: 'custom', path: ['no_decay', i], message: `not a regular expression: ${(e as Error).message}` }); }
  });
});

export const ScheduleConfig = z.strictObject({
  type: z.enum(['constant', 'linear', 'cosine', 'v0-cosine']),
  warmup_steps: nonNegInt.default(0),
  /** Floor of `cosine`; `v0-cosine` reads m = min_lr / lr from it (spec §4.5). */
  min_lr: z.number().min(0).default(0),
});

export const TrainingConfig = z.strictObject({
  /** Optimizer steps; or give epochs (turned into steps from the data's length). */
  steps: posInt.optional(),
  epochs: z.number().positive().optional(),
  /** Micro-batches per rank per optimizer step (ignored when global_batch is set: derived from it). */
  grad_accum: posInt.max(MAX_GRAD_ACCUM, `at most ${MAX_GRAD_ACCUM} micro-batches per step`).default(1),
  /**
   * Samples per optimizer step over all ranks: micro_batch × grad_accum × world size. When set, grad_accum is derived
   * from it and the world size, so the run trains the same on any number of ranks (and resumes on another number);
   * unset, grad_accum is kept and the global batch grows with the ranks.
   */
  global_batch: posInt.optional(),
  /** Global L2 gradient-norm clip; 0 turns clipping off. */
  clip: z.number().min(0).default(1),
  /** Non-finite steps skipped before the run stops with an error. */
  max_skipped_steps: nonNegInt.default(10),
}).superRefine((t, ctx) => {
  if ((t.steps === undefined) === (t.epochs === undefined)) {
    ctx.addIssue({ code: 'custom', path: [], message: 'give exactly one of training.steps and training.epochs' });
  }
});

export const LoggingConfig = z.strictObject({
  /** Log line / metrics record every N optimizer steps. */
  every: posInt.default(10),
  /** Evaluate every N steps (0: only at the end when eval data exists). */
  eval_every: nonNegInt.default(0),
  /** Micro-batches per evaluation (0: the whole eval set). */
  eval_batches: nonNegInt.default(0),
  /** Save a checkpoint every N steps (0: only at the end). */
  save_every: nonNegInt.default(0),
  keep_last: posInt.default(3),
  tensorboard: z.boolean().default(true),
  plots: z.boolean().default(true),
  progress: z.boolean().default(true),
  /** Peak FLOP/s of one device, for the utilisation estimate (e.g. 989e12 for an H100 in bf16). */
  peak_flops: z.number().positive().optional(),
});

export const RunConfig = z.strictObject({
  name: z.string().min(1).default('run'),
  out_dir: z.string().min(1),
  seed: nonNegInt.max(2 ** 53 - 1).default(42),
  device: z.string().regex(/^(auto|cpu|cuda(:\d+)?)$/, 'must be auto, cpu, cuda or cuda:N').default('auto'),
});

export const OwletConfig = z.strictObject({
  run: RunConfig,
  model: ModelConfig,
  stage: StageConfig,
  data: DataConfig,
  optimizer: OptimizerConfig,
  schedule: ScheduleConfig,
  training: TrainingConfig,
  logging: LoggingConfig.prefault({}),
}).superRefine((c, ctx) => {
  if (c.schedule.min_lr > c.optimizer.lr) {
    ctx.addIssue({ code: 'custom', path: ['schedule', 'min_lr'], message: `exceeds optimizer.lr (${c.optimizer.lr})` });
  }
  const g = c.training.global_batch;
  if (g !== undefined && g % c.data.micro_batch !== 0) {
    ctx.addIssue({ code: 'custom', path: ['training', 'global_batch'], message: `must be a multiple of data.micro_batch (${c.data.micro_batch})` });
  }
  if (g !== undefined && g / c.data.micro_batch > MAX_GRAD_ACCUM) {
    ctx.addIssue({ code: 'custom', path: ['training', 'global_batch'], message: `needs more than ${MAX_GRAD_ACCUM} micro-batches of data.micro_batch (${c.data.micro_batch}) per step` });
  }
  if (g !== undefined && c.training.grad_accum !== 1) {
    ctx.addIssue({ code: 'custom', path: ['training', 'grad_accum'], message: 'give training.global_batch or training.grad_accum, not both' });
  }
  if (c.training.steps !== undefined && c.schedule.warmup_steps > c.training.steps) {
    ctx.addIssue({ code: 'custom', path: ['schedule', 'warmup_steps'], message: `exceeds training.steps (${c.training.steps})` });
  }
});

export type OwletConfig = z.infer<typeof OwletConfig>;
export type OwletConfigInput = z.input<typeof OwletConfig>;
