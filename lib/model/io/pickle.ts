// A data-only pickle VM. It knows the opcodes that encode plain data (numbers, strings, bytes, tuples, lists, dicts,
// the memo) plus three that can name code — GLOBAL/STACK_GLOBAL, REDUCE and BUILD — and those only resolve names on an
// allow-list the caller supplies, calling the caller's own JS function for each. Nothing in the pickle can make this
// VM import, construct or call anything else: every other opcode (INST, OBJ, NEWOBJ, EXT*, …) is rejected.
import { CheckpointError } from './errors.ts';

/** A pickle tuple (kept distinct from lists so callers can tell `(a, b)` from `[a, b]`). */
export class PickleTuple {
  constructor(readonly items: unknown[]) {}
}

/** An allow-listed global: `call` implements REDUCE on it (without `call` it may be referenced but never called). */
export interface AllowedGlobal {
  readonly module: string;
  readonly name: string;
  call?: (args: unknown[]) => unknown;
}

export interface PickleHooks {
  /** `module.name` → the allowed global. Anything not here is rejected at GLOBAL time. */
  globals: ReadonlyMap<string, AllowedGlobal>;
  /** BINPERSID / PERSID: turns a persistent id into a value (torch: a storage reference). */
  persistentLoad?: (pid: unknown) => unknown;
  /** BUILD on an object this VM made (e.g. OrderedDict's `_metadata` state); default: rejected. */
  build?: (obj: unknown, state: unknown) => void;
}

const OPNAMES: Record<number, string> = {
  0x69: 'INST', 0x6f: 'OBJ', 0x81: 'NEWOBJ', 0x92: 'NEWOBJ_EX', 0x82: 'EXT1', 0x83: 'EXT2', 0x84: 'EXT4',
  0x96: 'BYTEARRAY8', 0x97: 'NEXT_BUFFER', 0x98: 'READONLY_BUFFER', 0x8f: 'EMPTY_SET', 0x90: 'ADDITEMS',
  0x91: 'FROZENSET', 0x46: 'FLOAT', 0x49: 'INT', 0x4c: 'LONG', 0x53: 'STRING', 0x56: 'UNICODE', 0x70: 'PUT', 0x67: 'GET',
};

/** Runs the pickle in `data` and returns the value STOP leaves on the stack. `what` names the source in errors. */
export function unpickle(data: Uint8Array, hooks: PickleHooks, what: string): unknown {
  const dv = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const stack: unknown[] = [];
  const marks: number[] = [];
  const memo = new Map<number, unknown>();
  const made = new WeakSet<object>(); // objects returned by allowed callables (BUILD targets)
  let p = 0;
  let op = 0, opAt = 0;
  const fail = (msg: string): never => {
    throw new CheckpointError(`unsafe or unsupported pickle: ${msg} (opcode 0x${op.toString(16)} at byte ${opAt})`, { file: what });
  };
  const need = (n: number) => { if (p + n > data.byteLength) fail('data ends in the middle of an opcode (truncated)'); };
  const u8 = () => { need(1); return data[p++]; };
  const u16 = () => { need(2); const v = dv.getUint16(p, true); p += 2; return v; };
  const u32 = () => { need(4); const v = dv.getUint32(p, true); p += 4; return v; };
  const i32 = () => { need(4); const v = dv.getInt32(p, true); p += 4; return v; };
  const u64 = () => {
    need(8);
    const v = dv.getBigUint64(p, true);
    p += 8;
    if (v > BigInt(data.byteLength)) fail(`length ${v} exceeds the pickle's size`);
    return Number(v);
  };
  const bytes = (n: number) => { need(n); const b = data.subarray(p, p + n); p += n; return b; };
  const utf8 = new TextDecoder('utf-8', { fatal: true });
  const str = (n: number) => { try { return utf8.decode(bytes(n)); } catch { return fail('string is not valid UTF-8'); } };
  const line = () => {
    const end = data.indexOf(0x0a, p);
    if (end < 0) fail('unterminated text argument');
    const s = new TextDecoder('latin1').decode(data.subarray(p, end));
    p = end + 1;
    return s;
  };
  const pop = () => { if (stack.length <= (marks.at(-1) ?? 0)) fail('stack underflow'); return stack.pop(); };
  const top = () => { if (!stack.length) fail('stack underflow'); return stack[stack.length - 1]; };
  const popMark = () => {
    const m = marks.pop();
    if (m === undefined) fail('no MARK to pop to');
    return stack.splice(m!);
  };
  const resolve = (module: string, name: string): AllowedGlobal => {
    const g = hooks.globals.get(`${module}.${name}`);
    if (!g) fail(`global '${module}.${name}' is not on the allow-list of tensor-only pickles`);
    return g!;
  };
  const longLE = (b: Uint8Array): number | bigint => {
    if (!b.length) return 0;
    // A tensor pickle's integers are sizes, strides and offsets; a longer one is hostile (building a huge BigInt byte
    // by byte took quadratic time: a 2 MB LONG4 hung the loader).
    if (b.length > 16) fail(`an integer of ${b.length} bytes (LONG); a tensor pickle holds none longer than 8`);
    let v = 0n;
    for (let i = b.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[i]);
    if (b[b.length - 1] & 0x80) v -= 1n << BigInt(8 * b.length);
    return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
  };
  const setItems = (d: unknown, kv: unknown[]) => {
    if (!(d instanceof Map)) fail('SETITEM(S) on something that is not a dict');
    if (kv.length % 2) fail('SETITEMS with an odd number of items');
    for (let i = 0; i < kv.length; i += 2) (d as Map<unknown, unknown>).set(kv[i], kv[i + 1]);
  };
  const appendTo = (l: unknown, xs: unknown[]) => {
    if (!Array.isArray(l)) fail('APPEND(S) on something that is not a list');
    for (const x of xs) (l as unknown[]).push(x); // (push(...xs) of 500k items overflowed the stack)
  };

  for (;;) {
    opAt = p;
    op = u8();
    switch (op) {
      case 0x80: u8(); break; // PROTO n
      case 0x95: u64(); break; // FRAME len: framing only
      case 0x2e: { // STOP
        if (stack.length !== 1 || marks.length) fail(`STOP with ${stack.length} values on the stack`);
        return stack[0];
      }
      case 0x28: marks.push(stack.length); break; // MARK
      case 0x30: pop(); break; // POP
      case 0x31: popMark(); break; // POP_MARK
      case 0x32: stack.push(top()); break; // DUP
      case 0x4e: stack.push(null); break; // NONE
      case 0x88: stack.push(true); break; // NEWTRUE
      case 0x89: stack.push(false); break; // NEWFALSE
      case 0x4a: stack.push(i32()); break; // BININT
      case 0x4b: stack.push(u8()); break; // BININT1
      case 0x4d: stack.push(u16()); break; // BININT2
      case 0x8a: stack.push(longLE(bytes(u8()))); break; // LONG1
      case 0x8b: { const n = u32(); stack.push(longLE(bytes(n))); break; } // LONG4
      case 0x47: { need(8); stack.push(dv.getFloat64(p, false)); p += 8; break; } // BINFLOAT (big-endian)
      case 0x58: stack.push(str(u32())); break; // BINUNICODE
      case 0x8c: stack.push(str(u8())); break; // SHORT_BINUNICODE
      case 0x8d: stack.push(str(u64())); break; // BINUNICODE8
      case 0x54: { const n = i32(); if (n < 0) fail('negative length'); stack.push(new TextDecoder('latin1').decode(bytes(n))); break; } // BINSTRING
      case 0x55: stack.push(new TextDecoder('latin1').decode(bytes(u8()))); break; // SHORT_BINSTRING
      case 0x42: stack.push(bytes(u32()).slice()); break; // BINBYTES
      case 0x43: stack.push(bytes(u8()).slice()); break; // SHORT_BINBYTES
      case 0x8e: stack.push(bytes(u64()).slice()); break; // BINBYTES8
      case 0x29: stack.push(new PickleTuple([])); break; // EMPTY_TUPLE
      case 0x74: stack.push(new PickleTuple(popMark())); break; // TUPLE
      case 0x85: stack.push(new PickleTuple([pop()])); break; // TUPLE1
      case 0x86: { const b = pop(), a = pop(); stack.push(new PickleTuple([a, b])); break; } // TUPLE2
      case 0x87: { const c = pop(), b = pop(), a = pop(); stack.push(new PickleTuple([a, b, c])); break; } // TUPLE3
      case 0x5d: stack.push([]); break; // EMPTY_LIST
      case 0x6c: stack.push(popMark()); break; // LIST
      case 0x61: { const x = pop(); appendTo(top(), [x]); break; } // APPEND
      case 0x65: { const xs = popMark(); appendTo(top(), xs); break; } // APPENDS
      case 0x7d: stack.push(new Map()); break; // EMPTY_DICT
      case 0x64: { const d = new Map(); setItems(d, popMark()); stack.push(d); break; } // DICT
      case 0x73: { const v = pop(), k = pop(); setItems(top(), [k, v]); break; } // SETITEM
      case 0x75: { const kv = popMark(); setItems(top(), kv); break; } // SETITEMS
      case 0x71: memo.set(u8(), top()); break; // BINPUT
      case 0x72: memo.set(u32(), top()); break; // LONG_BINPUT
      case 0x94: memo.set(memo.size, top()); break; // MEMOIZE
      case 0x68: case 0x6a: { // BINGET, LONG_BINGET
        const i = op === 0x68 ? u8() : u32();
        if (!memo.has(i)) fail(`memo slot ${i} was never stored`);
        stack.push(memo.get(i));
        break;
      }
      case 0x63: { const module = line(), name = line(); stack.push(resolve(module, name)); break; } // GLOBAL
      case 0x93: { // STACK_GLOBAL
        const name = pop(), module = pop();
        if (typeof module !== 'string' || typeof name !== 'string') fail('STACK_GLOBAL needs two strings');
        stack.push(resolve(module as string, name as string));
        break;
      }
      case 0x51: { // BINPERSID
        if (!hooks.persistentLoad) fail('persistent ids are not allowed here');
        stack.push(hooks.persistentLoad!(pop()));
        break;
      }
      case 0x50: { // PERSID (text)
        if (!hooks.persistentLoad) fail('persistent ids are not allowed here');
        stack.push(hooks.persistentLoad!(line()));
        break;
      }
      case 0x52: { // REDUCE
        const args = pop(), fn = pop() as AllowedGlobal;
        if (!(args instanceof PickleTuple)) fail('REDUCE arguments are not a tuple');
        if (!fn || typeof fn !== 'object' || !hooks.globals.has(`${fn.module}.${fn.name}`) || !fn.call) {
          fail(`REDUCE on something that is not an allow-listed callable`);
        }
        const v = fn.call!((args as PickleTuple).items);
        if (v && typeof v === 'object') made.add(v);
        stack.push(v);
        break;
      }
      case 0x62: { // BUILD
        const state = pop(), obj = top();
        if (!hooks.build || !obj || typeof obj !== 'object' || !made.has(obj)) fail('BUILD on an object this reader did not make');
        hooks.build!(obj, state);
        break;
      }
      default:
        fail(`opcode ${OPNAMES[op] ?? `0x${op.toString(16)}`} is not allowed in a tensor-only pickle`);
    }
  }
}
