// Typed errors. Native failures carry a `code` (OWLET_SHAPE, …) and the op name; wrapNativeError maps them to
// classes so callers can `instanceof ShapeError` and tests can assert the kind, not just the text.
export class OwletError extends Error {
  readonly code: string;
  readonly op: string | undefined;
  constructor(message: string, code = 'OWLET_ERROR', op?: string) {
    super(message);
    this.name = new.target.name;
    this.code = code;
    this.op = op;
  }
}
export class ShapeError extends OwletError { constructor(m: string, op?: string) { super(m, 'OWLET_SHAPE', op); } }
export class DTypeError extends OwletError { constructor(m: string, op?: string) { super(m, 'OWLET_DTYPE', op); } }
export class DeviceError extends OwletError { constructor(m: string, op?: string) { super(m, 'OWLET_DEVICE', op); } }
export class DisposedError extends OwletError { constructor(m: string, op?: string) { super(m, 'OWLET_DISPOSED', op); } }
export class ArgumentError extends OwletError { constructor(m: string, op?: string) { super(m, 'OWLET_ARGUMENT', op); } }
export class OutOfMemoryError extends OwletError { constructor(m: string, op?: string) { super(m, 'OWLET_OOM', op); } }
export class BackendError extends OwletError { constructor(m: string, op?: string) { super(m, 'OWLET_BACKEND', op); } }
export class NotImplementedError extends OwletError { constructor(m: string, op?: string) { super(m, 'OWLET_NOT_IMPLEMENTED', op); } }
/** A collective, the rendezvous or the process group failed: a timeout, a rank that did not arrive or exited. */
export class DistributedError extends OwletError { constructor(m: string, op?: string) { super(m, 'OWLET_DIST', op); } }

const byCode: Record<string, new (m: string, op?: string) => OwletError> = {
  OWLET_SHAPE: ShapeError, OWLET_DTYPE: DTypeError, OWLET_DEVICE: DeviceError, OWLET_DISPOSED: DisposedError,
  OWLET_ARGUMENT: ArgumentError, OWLET_OOM: OutOfMemoryError, OWLET_BACKEND: BackendError,
  OWLET_NOT_IMPLEMENTED: NotImplementedError, OWLET_DIST: DistributedError,
};

export function wrapNativeError(e: unknown, op: string): Error {
  if (e instanceof OwletError) return e;
  const err = e as { code?: string; message?: string; op?: string };
  const cls = err && typeof err.code === 'string' ? byCode[err.code] : undefined;
  if (cls) return new cls(err.message ?? String(e), err.op ?? op);
  // A TypeError from node-addon-api (wrong argument kind) is still a misuse, not a crash.
  if (e instanceof TypeError) return new ArgumentError(`${op}: ${e.message}`, op);
  return e instanceof Error ? e : new OwletError(String(e), 'OWLET_ERROR', op);
}
