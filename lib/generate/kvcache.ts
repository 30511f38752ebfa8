// Keys and values of the tokens seen so far, per layer, [B, T_past, H, dh]; appending returns the full sequences.
import { concat, keep, type Tensor } from '../tensor/index.ts';
import type { KVCache } from '../model/llama.ts';

export class ConcatKVCache implements KVCache {
  k: (Tensor | null)[];
  v: (Tensor | null)[];
  constructor(layers: number) {
    this.k = new Array(layers).fill(null);
    this.v = new Array(layers).fill(null);
  }
  append(layer: number, k: Tensor, v: Tensor): { k: Tensor; v: Tensor } {
    const pk = this.k[layer], pv = this.v[layer];
    const nk = keep(pk ? concat([pk, k], 1) : k.share());
    const nv = keep(pv ? concat([pv, v], 1) : v.share());
    pk?.dispose();
    pv?.dispose();
    this.k[layer] = nk;
    this.v[layer] = nv;
    return { k: nk, v: nv };
  }
  get length(): number { return this.k[0]?.shape[1] ?? 0; }
  dispose(): void {
    for (const t of [...this.k, ...this.v]) t?.dispose();
    this.k.fill(null);
    this.v.fill(null);
  }
}
