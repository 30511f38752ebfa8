// A tiny mPLUG-Owl stage config for CLI-level training tests on the CPU: one layer each, 56-px images, the demo data.
import { validateConfig } from '../../../lib/train/config.ts';

export interface TinyStage { train: string; eval?: string; imageSize?: number; steps?: number; saveEvery?: number; stageId?: number;
  weights?: string; lr?: number; groups?: string[] }

export function tinyStageConfig(out: string, o: TinyStage) {
  return validateConfig({
    run: { name: 'tiny', out_dir: out, seed: 3, device: 'cpu' },
    model: { ...(o.weights ? { weights: o.weights } : {}), sizes: {
      num_query_tokens: 4,
      vision_config: { hidden_size: 32, intermediate_size: 64, num_hidden_layers: 1, num_attention_heads: 2, image_size: 56, patch_size: 14 },
      visual_abstractor_config: { hidden_size: 32, intermediate_size: 48, num_hidden_layers: 1, num_attention_heads: 2, encoder_hidden_size: 32 },
      text_config: { hidden_size: 48, intermediate_size: 64, num_hidden_layers: 1, num_attention_heads: 2, vocab_size: 32000 },
    } },
    stage: { id: o.stageId ?? 1, train: o.groups ?? (o.stageId === 0 ? ['llm'] : ['queries', 'abstractor']) },
    data: { train: [{ path: o.train }], eval: o.eval ? [{ path: o.eval }] : [], max_length: 48, micro_batch: 2,
      image: { size: o.imageSize ?? 56, train_transform: 'resize' } },
    optimizer: { lr: o.lr ?? 1e-3 },
    schedule: { type: 'constant', warmup_steps: 0 },
    training: { steps: o.steps ?? 2 },
    logging: { every: 1, save_every: o.saveEvery ?? 0, eval_batches: 1, tensorboard: false, plots: false, progress: false },
  });
}
