// Three small fp32 masters that train, named as a ViT layer's fc1 weight and bias and a weight outside any layer (the
// forward casts that one on its own), and an input [4, 3]: what the mixed-precision tests run a bf16 forward over.
import { tensor, type Tensor } from '../../lib/tensor/index.ts';
import { randn, rng } from './rng.ts';

export const MASTER_KEYS = {
  w: 'vision_model.encoder.layers.0.mlp.fc1.weight',
  b: 'vision_model.encoder.layers.0.mlp.fc1.bias',
  g: 'vision_model.post_layernorm.weight',  // outside any layer: its own cast
};

export function threeMasters(seed: number): { params: Map<string, Tensor>; x: Tensor } {
  const r = rng(seed);
  const params = new Map<string, Tensor>([
    [MASTER_KEYS.w, tensor(Float32Array.from(randn(r, 12)), [4, 3])],
    [MASTER_KEYS.b, tensor(Float32Array.from(randn(r, 4)), [4])],
    [MASTER_KEYS.g, tensor(Float32Array.from(randn(r, 4)), [4])],
  ]);
  for (const [k, p] of params) { p.name = k; p.requiresGrad = true; }
  return { params, x: tensor(Float32Array.from(randn(r, 12)), [4, 3]) };
}
