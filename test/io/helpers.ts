// Shared helpers for the checkpoint-format tests: the fixture location, an independent header parser, and a builder
// for hand-corrupted safetensors files.
import { readFileSync } from 'node:fs';

export const FIXTURE = '/work/shared/fixtures/owl-tiny';

export interface RawEntry { dtype: string; shape: number[]; data_offsets: [number, number] }

/** Parses a safetensors header with nothing but DataView and JSON.parse (independent of the code under test). */
export function rawHeader(file: string): { header: Record<string, RawEntry>; metadata: Record<string, string> | undefined;
  dataStart: number; bytes: Buffer } {
  const bytes = readFileSync(file);
  const n = Number(bytes.readBigUInt64LE(0));
  const { __metadata__: metadata, ...header } = JSON.parse(bytes.subarray(8, 8 + n).toString('utf8'));
  return { header, metadata, dataStart: 8 + n, bytes };
}

/** A safetensors file from an arbitrary (possibly lying) header object and data bytes. */
export function craftSafetensors(header: Record<string, unknown>, data: Uint8Array): Uint8Array {
  const json = new TextEncoder().encode(JSON.stringify(header));
  const out = new Uint8Array(8 + json.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  out.set(data, 8 + json.length);
  return out;
}
