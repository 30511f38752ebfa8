// A tape autograd. Ops record a node only when grad mode is on and an input requires grad; a node's backward gets a
// `needs` mask and computes only the gradients asked for, so frozen weights cost no weight-gradient GEMM and no
// gradient memory. Nodes keep what backward needs through shared handles (Tensor.share), so a user disposing an
// activation early cannot break backward; backward() releases everything it held.
import { AsyncLocalStorage } from 'node:async_hooks';
import { ArgumentError, ShapeError } from './errors.ts';
import { keep, setTapeHooks } from './scope.ts';
import { Tensor, full, sameBackend } from './tensor.ts';

/** `saved` holds what record() was given, in order; a slot recorded as null (an operand the op knew its backward
 *  would not read, given which inputs need a gradient) is null here too, typed as Tensor for the ops' convenience.
 *  `into[j]`: the gradient input j has received so far from the ops back-propagated before, where the op may add its
 *  own into it in place (an intermediate's gradient whose storage no other handle uses), else null. Returning that
 *  same tensor for input j says the op did — e.g. a linear's dx GEMM accumulating with beta = 1 — which saves the
 *  separate pass that sums two gradients of a tensor read by several ops (LLaMA's q/k/v projections read one norm
 *  output). Ops that do not look at it return new gradients, which are summed as before. */
export type BackwardFn = (grads: (Tensor | null)[], saved: Tensor[], needs: boolean[], into: (Tensor | null)[]) =>
  (Tensor | null | undefined)[];

interface Node {
  op: string;
  inputs: (Tensor | null)[]; // leaves are referenced (parameters outlive the step); others only by id
  inputIds: number[];
  needs: boolean[];
  outputs: number[];
  saved: (Tensor | null)[];
  backward: BackwardFn;
  /** Leaves whose .grad this node's backward accumulates into directly (a checkpointed block's parameters). */
  uses: Tensor[];
}

const gradMode = new AsyncLocalStorage<boolean>();
let tape: Node[] = [];

export function isGradEnabled(): boolean { return gradMode.getStore() ?? true; }

/** Runs fn (sync or async) with no recording: inference, evaluation, optimizer updates. */
export function noGrad<T>(fn: () => T): T { return gradMode.run(false, fn); }
export function enableGrad<T>(fn: () => T): T { return gradMode.run(true, fn); }

// While a checkpointed block runs its forward without grad, every tensor requiring grad that an op of the block is
// given lands here: the block's parameters and the outer activations it closes over (see checkpoint.ts).
let usesSink: Set<Tensor> | null = null;

/** Runs fn (synchronous) and returns, besides its result, every tensor requiring grad that an op inside was given
 *  while grad mode was off — what a block run under noGrad would have recorded as inputs. */
export function collectGradUses<T>(fn: () => T): { result: T; uses: Set<Tensor> } {
  const outer = usesSink, uses = new Set<Tensor>();
  usesSink = uses;
  try {
    const result = fn();
    if (result instanceof Promise) throw new ArgumentError('collectGradUses: fn must be synchronous', 'checkpoint');
    return { result, uses };
  } finally {
    usesSink = outer;
    if (outer) for (const t of uses) outer.add(t);
  }
}

/** True when an op over these inputs must record (grad mode on and some input requires grad). */
export function needsGrad(...inputs: (Tensor | null | undefined)[]): boolean {
  if (!isGradEnabled()) {
    if (usesSink) for (const t of inputs) if (t && t.requiresGrad) usesSink.add(t);
    return false;
  }
  for (const t of inputs) if (t && t.requiresGrad) return true;
  return false;
}

/**
 * Records an op. Call only when needsGrad(inputs). Marks outputs as requiring grad; `saved` tensors are shared (new
 * handles on the same storage) and kept out of every scope until backward() or clearTape() releases them. Pass null
 * for a slot backward will not read (e.g. a linear's input when its weight is frozen), so the tape does not keep that
 * activation alive until backward.
 */
export function record(op: string, inputs: (Tensor | null | undefined)[], outputs: Tensor[], saved: (Tensor | null)[],
  backward: BackwardFn, uses: Tensor[] = []): void {
  const ins = inputs.map((t) => t ?? null);
  const node: Node = {
    op,
    inputs: ins.map((t) => (t && t.requiresGrad && !t.fromTape ? t : null)),
    inputIds: ins.map((t) => t?.id ?? -1),
    needs: ins.map((t) => !!t && t.requiresGrad),
    outputs: outputs.map((t) => t.id),
    saved: saved.map((t) => (t ? keep(t.share()) : null)),
    backward,
    uses,
  };
  for (const t of outputs) { t.requiresGrad = true; t.fromTape = true; }
  tape.push(node);
}

// A synchronous scope() whose function throws drops the nodes recorded inside it (their outputs are disposed with the
// scope, so nothing could back-propagate through them) and releases what they saved, instead of keeping those
// activations until the next backward() or clearTape().
setTapeHooks({
  mark: () => ({ tape, length: tape.length }),
  drop: (m) => {
    const { tape: at, length } = m as { tape: Node[]; length: number };
    if (at !== tape || tape.length <= length) return;
    for (const n of tape.splice(length)) for (const s of n.saved) s?.dispose();
  },
});

/** Number of recorded nodes (tests). */
export function tapeLength(): number { return tape.length; }

/** What the tape holds for backward, node by node (memory census: bench/memory_census.ts, tests). */
export function tapeSaved(): { op: string; saved: Tensor[] }[] {
  return tape.map((n) => ({ op: n.op, saved: n.saved.filter((t): t is Tensor => t !== null) }));
}

/** Drops the tape without computing gradients (a forward that will not be back-propagated). */
export function clearTape(): void {
  for (const n of tape) for (const s of n.saved) s?.dispose();
  tape = [];
}

/**
 * prev + g, owned by the caller (prev and g are consumed). In place into prev only when no other handle uses its
 * storage: a backward may hand one storage to several inputs (add gives both operands the incoming gradient), and an
 * in-place sum into one of them would change the others' gradients too.
 */
function sum(prev: Tensor, g: Tensor): Tensor {
  if (!prev.storageShared) {
    prev.backend.axpy(prev.handle, g.handle, 1);
    g.dispose();
    return prev;
  }
  const s = keep(new Tensor(prev.backend.add(prev.handle, g.handle, 1, 1), prev.backend));
  prev.dispose();
  g.dispose();
  return s;
}

/** t in `dtype` (consumed): itself, or an exact widening (bf16 -> f32) of it. */
function widened(t: Tensor, dtype: Tensor['dtype']): Tensor {
  if (t.dtype === dtype) return t;
  const w = keep(new Tensor(t.backend.cast(t.handle, dtype), t.backend));
  t.dispose();
  return w;
}

/** A leaf's .grad plus a new gradient g (both consumed). A .grad held in the compute dtype (lowPrecisionLeafGrads)
 *  is widened to the leaf's dtype first, and g too, so the sum is the fp32 one that casting each to fp32 gives. */
function leafSum(leaf: Tensor, prev: Tensor, g: Tensor): Tensor {
  if (prev.dtype === g.dtype && prev.dtype === leaf.dtype) return sum(prev, g);
  return sum(widened(prev, leaf.dtype), widened(g, leaf.dtype));
}

function accumulate(into: Map<number, Tensor>, id: number, g: Tensor): void {
  const prev = into.get(id);
  into.set(id, prev ? sum(prev, g) : g);
}

export interface BackwardOptions {
  /**
   * Called once for each leaf on the tape (a tensor that requires grad and that no op produced: a parameter) as soon
   * as its `.grad` is final for this backward: right after the earliest node that uses it, the last one back-propagated,
   * was processed. The leaf may have no `.grad` (none of its uses received a gradient). Data-parallel training starts
   * all-reducing a bucket of gradients from here while the rest of the backward runs (lib/dist/grad-reducer.ts).
   */
  onGradReady?: (leaf: Tensor) => void;
  /**
   * Let a parameter's .grad hold its gradient in the dtype of the mixed-precision cast that produced it: the bf16
   * gradient of an fp32 master's bf16 working copy stays bf16 instead of being widened to fp32 (castMany's backward).
   * The values are the same (bf16 -> f32 is exact), and AdamW and the gradient norms read either dtype, so a trainer
   * that only hands the gradients to those saves a cast over every trained weight and half the gradients' memory; a
   * second gradient for the same leaf (another micro-batch) is summed in the leaf's dtype, as before. Off by default:
   * a .grad of another dtype than its parameter would surprise other readers.
   */
  lowPrecisionLeafGrads?: boolean;
}

let lowpLeafGrads = false;
/** Whether the backward running now lets leaves keep gradients in the compute dtype (BackwardOptions). */
export function lowPrecisionLeafGrads(): boolean { return lowpLeafGrads; }

/** Per node index, the leaves whose last use in back-propagation order (their earliest use on the tape) it is. */
function readyAfter(nodes: Node[]): Map<number, Tensor[]> {
  const seen = new Set<Tensor>();
  const at = new Map<number, Tensor[]>();
  nodes.forEach((n, i) => {
    for (const leaf of [...n.inputs, ...n.uses]) {
      if (!leaf || seen.has(leaf)) continue;
      seen.add(leaf);
      if (!at.has(i)) at.set(i, []);
      at.get(i)!.push(leaf);
    }
  });
  return at;
}

/** One node's backward: its inputs' gradients, accumulated into leaves' .grad or into `grads` (by tensor id). */
function backpropNode(n: Node, grads: Map<number, Tensor>): void {
  const gys = n.outputs.map((id) => grads.get(id) ?? null);
  if (gys.every((g) => g === null)) { for (const s of n.saved) s?.dispose(); return; }
  // (leaves keep their .grad summed below: a parameter's gradient may be another dtype than the op's, an fp32 master's)
  const into = n.inputIds.map((id, j) => {
    if (!n.needs[j] || n.inputs[j]) return null;
    const prev = grads.get(id);
    return prev && !prev.storageShared ? prev : null;
  });
  const gin = n.backward(gys, n.saved as Tensor[], n.needs, into);
  // What this node kept is read by no other node: release it now, so activations are freed as backward walks down
  // the tape (a storage lives on only while the forward's scope still holds it) instead of all at the end while
  // every gradient has been made.
  for (const s of n.saved) s?.dispose();
  for (const id of n.outputs) { grads.get(id)?.dispose(); grads.delete(id); }
  for (let j = 0; j < n.inputIds.length; j++) {
    const g = gin[j];
    if (!g || g === into[j]) continue;  // (that one: accumulated in place, already in `grads`)
    keep(g);
    if (!n.needs[j]) { g.dispose(); continue; }
    const leaf = n.inputs[j];
    if (leaf?.disposed) { g.dispose(); continue; }  // nothing could read or release a disposed leaf's .grad
    if (leaf) {
      if (!leaf.grad) leaf.grad = g;
      else leaf.grad = leafSum(leaf, leaf.grad, g);
    } else accumulate(grads, n.inputIds[j], g);
  }
}

/** A tape recorded apart from the global one (a checkpointed block's recomputation). */
export interface PrivateTape { readonly nodes: readonly unknown[] }

/** Runs fn (synchronous) with grad mode on, recording onto a fresh tape that is returned rather than joining the
 *  global one; the global tape is left as it was. */
export function recordPrivate<T>(fn: () => T): { result: T; tape: PrivateTape } {
  const outer = tape;
  tape = [];
  try {
    const result = enableGrad(fn);
    return { result, tape: { nodes: tape } };
  } catch (e) {
    for (const n of tape) for (const s of n.saved) s?.dispose();
    throw e;
  } finally {
    tape = outer;
  }
}

/**
 * Back-propagates through a private tape: `seeds` pairs tensors its ops produced with their incoming gradients
 * (borrowed: not disposed here). Leaves accumulate into .grad exactly as in backward(); the gradients that reach
 * `wanted` (tensors the tape used but did not produce) are returned, owned by the caller; null where none arrived.
 * Everything else the tape held is released.
 */
export function backpropPrivate(t: PrivateTape, seeds: [Tensor, Tensor | null][], wanted: Tensor[]): (Tensor | null)[] {
  const nodes = t.nodes as Node[];
  const grads = new Map<number, Tensor>();
  try {
    return noGrad(() => {
      // A seed is shared, not copied, unless gradient could later be added into it (a tensor the tape also consumes,
      // or one seeded twice): the borrowed storage must not change.
      const consumed = new Set(nodes.flatMap((n) => n.inputIds));
      for (const [y, g] of seeds) {
        if (!g || !y.fromTape) continue;
        const copy = consumed.has(y.id) || seeds.filter(([z]) => z === y).length > 1;
        accumulate(grads, y.id, keep(copy ? new Tensor(g.backend.clone(g.handle), g.backend) : g.share()));
      }
      for (let i = nodes.length - 1; i >= 0; i--) backpropNode(nodes[i], grads);
      return wanted.map((w) => {
        const g = grads.get(w.id) ?? null;
        grads.delete(w.id);
        return g;
      });
    });
  } finally {
    for (const g of grads.values()) g.dispose();
    for (const n of nodes) for (const s of n.saved) s?.dispose();
  }
}

/**
 * Back-propagates from `loss` through the whole tape, accumulating into `.grad` of every leaf that requires grad,
 * then clears the tape. `grad` defaults to ones (loss is usually a one-element tensor).
 */
export function backward(loss: Tensor, grad?: Tensor, o: BackwardOptions = {}): void {
  if (!loss.requiresGrad) {
    clearTape();
    throw new ArgumentError('backward: the loss does not depend on any tensor that requires grad', 'backward');
  }
  if (grad !== undefined) {
    // (checked here: a grad of another dtype failed in the first op's backward, naming that op — 'mul: a must be f32')
    if (!(grad instanceof Tensor)) throw new ArgumentError(`backward: grad must be a Tensor, got ${grad === null ? 'null' : typeof grad}`, 'backward');
    sameBackend('backward', loss, grad);
    if (grad.numel !== loss.numel) throw new ShapeError(`backward: grad ${grad.describe()} does not match ${loss.describe()}`, 'backward');
    if (grad.dtype !== loss.dtype) throw new ArgumentError(`backward: grad ${grad.describe()} must have the loss's dtype (${loss.describe()})`, 'backward');
  }
  if (loss.fromTape && !tape.some((n) => n.outputs.includes(loss.id))) {
    throw new ArgumentError(`backward: the op that produced ${loss.toString()} is no longer on the tape: a backward() ` +
      'already went through it (each backward consumes the whole tape: sum the losses and call backward once), or ' +
      'clearTape() dropped it', 'backward');
  }
  const grads = new Map<number, Tensor>();
  const nodes = tape;
  tape = [];
  const lowpBefore = lowpLeafGrads;
  lowpLeafGrads = o.lowPrecisionLeafGrads ?? false;
  try {
    noGrad(() => {
      grads.set(loss.id, grad ? keep(grad.share()) : keep(full([...loss.shape], 1, { device: loss.device })));
      const ready = o.onGradReady ? readyAfter(nodes) : null;
      for (let i = nodes.length - 1; i >= 0; i--) {
        backpropNode(nodes[i], grads);
        const leaves = ready?.get(i);
        if (leaves) for (const leaf of leaves) o.onGradReady!(leaf);
      }
    });
  } finally {
    lowpLeafGrads = lowpBefore;
    for (const g of grads.values()) g.dispose();
    for (const n of nodes) for (const s of n.saved) s?.dispose();
  }
}
