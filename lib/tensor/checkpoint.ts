// Activation recomputation (gradient checkpointing). A block's forward runs without recording and keeps only its
// inputs; one tape node stands for the whole block. Its backward re-runs the block with grad on a private tape,
// back-propagates the incoming output gradient through that, and frees it: the block's activations exist only while
// its own backward runs, for the price of a second forward of the block.
import { backpropPrivate, collectGradUses, isGradEnabled, noGrad, record, recordPrivate } from './autograd.ts';
import { ArgumentError } from './errors.ts';
import { scope } from './scope.ts';
import type { Tensor } from './tensor.ts';

/**
 * fn(...inputs) (one tensor or an array of them), its activations recomputed in the backward instead of kept.
 * Gradients are those of calling fn directly: the inputs' through this node, and parameters fn uses (closed over)
 * accumulate into .grad during the recomputation's backward, in the order the plain tape would. fn must be
 * synchronous and deterministic: randomness must replay (ForwardContext.replayingSeeds); tensors it closes over
 * must stay alive until backward (parameters, the forward's working copies). Under noGrad it is just fn(...inputs).
 */
export function checkpoint<T extends Tensor | Tensor[]>(fn: (...inputs: Tensor[]) => T, inputs: Tensor[]): T {
  if (!isGradEnabled()) return fn(...inputs);
  const { result, uses } = collectGradUses(() => noGrad(() => scope(() => fn(...inputs))));
  const outs: Tensor[] = Array.isArray(result) ? result : [result];
  checkOutputs(outs, inputs, uses);
  for (const x of inputs) uses.delete(x);
  // Tensors requiring grad that fn reached without taking them as inputs: parameters (leaves: their gradient
  // accumulates into .grad during the recomputation) and activations of the enclosing forward (their gradient
  // must flow on through the outer tape, so they become extra inputs of the node).
  const leaves = [...uses].filter((t) => !t.fromTape);
  const captured = [...uses].filter((t) => t.fromTape);
  if (!inputs.some((x) => x.requiresGrad) && uses.size === 0) return result;
  record('checkpoint', [...inputs, ...captured], outs, inputs, (gys, saved, needs) => scope(() => {
    // Fresh handles on the saved inputs, as non-leaves so their gradients collect by id rather than into .grad.
    const xs = saved.map((s, i) => {
      const a = s.share();
      if (needs[i]) { a.requiresGrad = true; a.fromTape = true; }
      return a;
    });
    // The inner scope frees what the recomputation made and its tape does not need, before back-propagating.
    const { result: again, tape } = recordPrivate(() => scope(() => fn(...xs)));
    const ys: Tensor[] = Array.isArray(again) ? again : [again];
    if (ys.length !== outs.length) {
      backpropPrivate(tape, [], []);
      throw new ArgumentError(`checkpoint: the recomputation returned ${ys.length} tensors, the forward ${outs.length}`, 'checkpoint');
    }
    const g = backpropPrivate(tape, ys.map((y, i) => [y, gys[i]]), [...xs, ...captured]);
    return g.map((gi, i) => {
      if (needs[i]) return gi;
      gi?.dispose();
      return null;
    });
  }), leaves);
  return result;
}

function checkOutputs(outs: Tensor[], inputs: Tensor[], uses: Set<Tensor>): void {
  const seen = new Set<Tensor>();
  for (const y of outs) {
    if (inputs.includes(y) || uses.has(y)) {
      throw new ArgumentError(`checkpoint: fn returned ${y.describe()} it was given or closes over; return a computed tensor`, 'checkpoint');
    }
    if (seen.has(y)) throw new ArgumentError(`checkpoint: fn returned ${y.describe()} twice`, 'checkpoint');
    seen.add(y);
  }
}
