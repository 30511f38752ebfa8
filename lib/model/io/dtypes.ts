// The element types of the checkpoint formats, and how they map onto the runtime's dtypes.
import type { DType } from '../../tensor/index.ts';

/** safetensors dtype names (the subset owlet can hold, plus the ones it converts on load). */
export type SafetensorsDType = 'F32' | 'BF16' | 'F16' | 'I64' | 'I32' | 'U8' | 'BOOL' | 'F64';

export interface DTypeInfo {
  /** Bytes per element in the file. */
  size: number;
  /** The runtime dtype this becomes on load. */
  runtime: DType;
  /** True when the bytes must be converted (not just copied) to become `runtime`. */
  convert: boolean;
  floating: boolean;
}

export const SAFETENSORS_DTYPES: Record<SafetensorsDType, DTypeInfo> = {
  F32: { size: 4, runtime: 'f32', convert: false, floating: true },
  BF16: { size: 2, runtime: 'bf16', convert: false, floating: true },
  F16: { size: 2, runtime: 'f16', convert: false, floating: true },
  I64: { size: 8, runtime: 'i64', convert: false, floating: false },
  I32: { size: 4, runtime: 'i32', convert: false, floating: false },
  U8: { size: 1, runtime: 'u8', convert: false, floating: false },
  BOOL: { size: 1, runtime: 'u8', convert: false, floating: false }, // same bytes: 0/1
  F64: { size: 8, runtime: 'f32', convert: true, floating: true }, // narrowed on load (owlet has no f64)
};

/** Valid safetensors dtypes that owlet cannot hold: named in the error so the message is precise. */
export const UNSUPPORTED_SAFETENSORS_DTYPES = new Set(['I8', 'I16', 'U16', 'U32', 'U64', 'F8_E4M3', 'F8_E5M2']);

export function isSafetensorsDType(s: string): s is SafetensorsDType { return Object.hasOwn(SAFETENSORS_DTYPES, s); }

const RUNTIME_TO_SAFETENSORS: Record<DType, SafetensorsDType> = {
  f32: 'F32', bf16: 'BF16', f16: 'F16', i64: 'I64', i32: 'I32', u8: 'U8',
};
export function safetensorsDTypeOf(d: DType): SafetensorsDType { return RUNTIME_TO_SAFETENSORS[d]; }

export const RUNTIME_SIZE: Record<DType, number> = { f32: 4, bf16: 2, f16: 2, i64: 8, i32: 4, u8: 1 };

export function isFloating(d: DType): boolean { return d === 'f32' || d === 'bf16' || d === 'f16'; }

export function numelOf(shape: readonly number[]): number { return shape.reduce((a, b) => a * b, 1); }
