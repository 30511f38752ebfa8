// The CPU benchmarks' model of a training stage and their numeric command-line options.
import { MplugOwl, initLora, initParams, parseAdapterConfig, type OwlConfig } from '../lib/model/index.ts';

/** Random weights of `cfg`'s sizes (seed 0, N(0, std)), LoRA r 8 on q_proj/v_proj in stage 2, and the stage's
 *  trainable groups: stage 1 the ViT, queries and abstractor; stage 2 LoRA, queries and abstractor. */
export function stageModel(cfg: OwlConfig, stage: number, o: { std: number; loraDropout: number }): MplugOwl {
  const params = initParams(cfg, { seed: 0, std: o.std });
  const adapter = stage === 2
    ? parseAdapterConfig({ r: 8, lora_alpha: 32, lora_dropout: o.loraDropout, target_modules: ['q_proj', 'v_proj'] })
    : null;
  if (adapter) initLora(cfg, adapter, params);
  const model = new MplugOwl(cfg, params, adapter);
  model.setTrainable(stage === 1 ? ['vision', 'queries', 'abstractor'] : ['lora', 'queries', 'abstractor']);
  return model;
}

/** `--name value` from the command line as a number, or `dflt`. */
export function numberArg(name: string, dflt: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
}
