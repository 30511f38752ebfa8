// Ownership scopes. Every tensor created inside `scope(fn)` is disposed when fn finishes, except what fn returns
// (moved to the enclosing scope) and what was `keep()`-ed. The current scope follows async continuations through
// AsyncLocalStorage, so `await scope(async () => …)` behaves like the synchronous form (tfjs's tidy cannot do this).
import { AsyncLocalStorage } from 'node:async_hooks';

export interface Disposable_ {
  dispose(): void;
  readonly disposed: boolean;
}

class Scope {
  readonly owned = new Set<Disposable_>();
  constructor(readonly parent: Scope | undefined) {}
}

const current = new AsyncLocalStorage<Scope>();

/** Called by every tensor constructor. */
export function track(t: Disposable_): void {
  current.getStore()?.owned.add(t);
}

/** What the current scope owns and has not disposed yet (memory census). */
export function scopeOwned(): Disposable_[] {
  return [...(current.getStore()?.owned ?? [])].filter((t) => !t.disposed);
}

/** Removes t from the current scope chain, so no scope disposes it. */
export function keep<T extends Disposable_>(t: T): T {
  for (let s = current.getStore(); s; s = s.parent) s.owned.delete(t);
  return t;
}

function collect(v: unknown, out: Set<unknown>, depth = 0): void {
  if (v === null || typeof v !== 'object' || depth > 4 || out.has(v)) return;
  out.add(v);
  if (Array.isArray(v)) for (const x of v) collect(x, out, depth + 1);
  else if (v instanceof Map) for (const x of v.values()) collect(x, out, depth + 1);
  else if (Object.getPrototypeOf(v) === Object.prototype) for (const x of Object.values(v)) collect(x, out, depth + 1);
}

function close(s: Scope, result: unknown): void {
  const returned = new Set<unknown>();
  collect(result, returned);
  for (const t of s.owned) {
    if (returned.has(t)) s.parent?.owned.add(t);
    else if (!t.disposed) t.dispose();
  }
  s.owned.clear();
}

// The autograd tape (autograd.ts registers itself; scope.ts cannot import it: the tape keeps tensors through keep()).
interface TapeHooks { mark(): unknown; drop(mark: unknown): void }
let tapeHooks: TapeHooks | null = null;
export function setTapeHooks(h: TapeHooks): void { tapeHooks = h; }

/**
 * Runs fn in a new scope. Tensors it creates are disposed at the end unless returned (directly, or inside arrays,
 * Maps or plain objects) or kept. Works for async functions: the scope closes when the promise settles.
 */
export function scope<T>(fn: () => T): T {
  const s = new Scope(current.getStore());
  const mark = tapeHooks?.mark();
  let result: T;
  try {
    result = current.run(s, fn);
  } catch (e) {
    // (only a synchronous throw: nodes an async function records may interleave with other async work's)
    tapeHooks?.drop(mark);
    close(s, undefined);
    throw e;
  }
  if (result instanceof Promise) {
    return result.then(
      (v) => { close(s, v); return v; },
      (e) => { close(s, undefined); throw e; },
    ) as T;
  }
  close(s, result);
  return result;
}
