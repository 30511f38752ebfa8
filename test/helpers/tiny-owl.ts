// A randomly initialised mPLUG-Owl of a few thousand parameters (28-px images, one layer each) for tests that need a
// whole model but not the fixture's numbers.
import { MplugOwl, initParams, parseOwlConfig } from '../../lib/model/index.ts';

export function tinyOwl(o: { vocab?: number; seed?: number } = {}): MplugOwl {
  const config = parseOwlConfig({
    num_query_tokens: 2,
    vision_config: { hidden_size: 16, intermediate_size: 32, num_hidden_layers: 1, num_attention_heads: 2, image_size: 28, patch_size: 14 },
    visual_abstractor_config: { hidden_size: 16, intermediate_size: 24, num_hidden_layers: 1, num_attention_heads: 2, encoder_hidden_size: 16 },
    text_config: { hidden_size: 16, intermediate_size: 24, num_hidden_layers: 1, num_attention_heads: 2, vocab_size: o.vocab ?? 32000 },
  });
  return new MplugOwl(config, initParams(config, { seed: o.seed ?? 1 }));
}
