// SentencePiece `tokenizer.model` files: the protobuf ModelProto, read and written by hand (no protobuf dependency).
// Only the fields a BPE encoder needs are kept; everything else is skipped on read. Field numbers are those of
// sentencepiece_model.proto (ModelProto.pieces = 1, trainer_spec = 2, normalizer_spec = 3; SentencePiece.piece = 1,
// score = 2, type = 3; TrainerSpec.model_type = 3, vocab_size = 4, byte_fallback = 35, unk/bos/eos/pad_id = 40..43;
// NormalizerSpec.name = 1, precompiled_charsmap = 2, add_dummy_prefix = 3, remove_extra_whitespaces = 4,
// escape_whitespaces = 5).
import { TokenizerError } from './errors.ts';

export const PieceType = { NORMAL: 1, UNKNOWN: 2, CONTROL: 3, USER_DEFINED: 4, UNUSED: 5, BYTE: 6 } as const;
export const ModelType = { UNIGRAM: 1, BPE: 2, WORD: 3, CHAR: 4 } as const;

export interface SpPiece { piece: string; score: number; type: number }
export interface SpTrainerSpec {
  modelType: number; vocabSize: number; byteFallback: boolean;
  unkId: number; bosId: number; eosId: number; padId: number;
}
export interface SpNormalizerSpec {
  name: string; precompiledCharsmap: Uint8Array;
  addDummyPrefix: boolean; removeExtraWhitespaces: boolean; escapeWhitespaces: boolean;
}
export interface SpModelProto { pieces: SpPiece[]; trainer: SpTrainerSpec; normalizer: SpNormalizerSpec }

// Proto2 defaults, used when a field is absent from the file.
const trainerDefaults = (): SpTrainerSpec =>
  ({ modelType: ModelType.UNIGRAM, vocabSize: 8000, byteFallback: false, unkId: 0, bosId: 1, eosId: 2, padId: -1 });
const normalizerDefaults = (): SpNormalizerSpec =>
  ({ name: '', precompiledCharsmap: new Uint8Array(0), addDummyPrefix: true, removeExtraWhitespaces: true, escapeWhitespaces: true });

class Reader {
  pos = 0;
  constructor(readonly buf: Uint8Array, readonly what: string) {}
  get done(): boolean { return this.pos >= this.buf.length; }
  varint(): bigint {
    let result = 0n, shift = 0n;
    for (;;) {
      if (this.pos >= this.buf.length) throw new TokenizerError(`${this.what}: truncated varint`);
      const b = this.buf[this.pos++];
      result |= BigInt(b & 0x7f) << shift;
      if (!(b & 0x80)) return result;
      shift += 7n;
      if (shift > 63n) throw new TokenizerError(`${this.what}: varint longer than 10 bytes`);
    }
  }
  int32(): number { return Number(BigInt.asIntN(32, this.varint())); }
  bytes(): Uint8Array {
    const n = Number(this.varint());
    if (this.pos + n > this.buf.length) throw new TokenizerError(`${this.what}: field of ${n} bytes runs past the end`);
    const out = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }
  float(): number {
    if (this.pos + 4 > this.buf.length) throw new TokenizerError(`${this.what}: truncated float`);
    const v = new DataView(this.buf.buffer, this.buf.byteOffset + this.pos, 4).getFloat32(0, true);
    this.pos += 4;
    return v;
  }
  skip(wire: number): void {
    if (wire === 0) this.varint();
    else if (wire === 1) this.pos += 8;
    else if (wire === 2) this.bytes();
    else if (wire === 5) this.pos += 4;
    else throw new TokenizerError(`${this.what}: unsupported protobuf wire type ${wire} (not a SentencePiece model?)`);
    if (this.pos > this.buf.length) throw new TokenizerError(`${this.what}: truncated field`);
  }
  /** Iterates fields: calls fn(field, wire) which must consume the value or return false to have it skipped. */
  fields(fn: (field: number, wire: number) => boolean): void {
    while (!this.done) {
      const key = Number(this.varint());
      const field = key >>> 3, wire = key & 7;
      if (field === 0) throw new TokenizerError(`${this.what}: invalid protobuf field number 0 (not a SentencePiece model?)`);
      if (!fn(field, wire)) this.skip(wire);
    }
  }
}

// ignoreBOM: keep a leading U+FEFF. By default TextDecoder drops it, and LLaMA has a piece that is exactly U+FEFF (id
// 30143): it was read as "", so a BOM in a text encoded as three byte pieces instead of 30143, unlike SentencePiece.
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

function readPiece(buf: Uint8Array, what: string): SpPiece {
  const p: SpPiece = { piece: '', score: 0, type: PieceType.NORMAL };
  const r = new Reader(buf, what);
  r.fields((f, w) => {
    if (f === 1 && w === 2) { p.piece = utf8.decode(r.bytes()); return true; }
    if (f === 2 && w === 5) { p.score = r.float(); return true; }
    if (f === 3 && w === 0) { p.type = r.int32(); return true; }
    return false;
  });
  return p;
}

/** Parses a serialized SentencePiece ModelProto (`tokenizer.model`). */
export function parseModelProto(buf: Uint8Array, what = 'tokenizer.model'): SpModelProto {
  const model: SpModelProto = { pieces: [], trainer: trainerDefaults(), normalizer: normalizerDefaults() };
  const r = new Reader(buf, what);
  try {
    r.fields((f, w) => {
      if (f === 1 && w === 2) { model.pieces.push(readPiece(r.bytes(), what)); return true; }
      if (f === 2 && w === 2) {
        const t = new Reader(r.bytes(), what), s = model.trainer;
        t.fields((tf, tw) => {
          if (tw !== 0) return false;
          switch (tf) {
            case 3: s.modelType = t.int32(); return true;
            case 4: s.vocabSize = t.int32(); return true;
            case 35: s.byteFallback = t.varint() !== 0n; return true;
            case 40: s.unkId = t.int32(); return true;
            case 41: s.bosId = t.int32(); return true;
            case 42: s.eosId = t.int32(); return true;
            case 43: s.padId = t.int32(); return true;
            default: return false;
          }
        });
        return true;
      }
      if (f === 3 && w === 2) {
        const n = new Reader(r.bytes(), what), s = model.normalizer;
        n.fields((nf, nw) => {
          if (nf === 1 && nw === 2) { s.name = utf8.decode(n.bytes()); return true; }
          if (nf === 2 && nw === 2) { s.precompiledCharsmap = n.bytes().slice(); return true; }
          if (nw !== 0) return false;
          if (nf === 3) { s.addDummyPrefix = n.varint() !== 0n; return true; }
          if (nf === 4) { s.removeExtraWhitespaces = n.varint() !== 0n; return true; }
          if (nf === 5) { s.escapeWhitespaces = n.varint() !== 0n; return true; }
          return false;
        });
        return true;
      }
      return false;
    });
  } catch (e) {
    if (e instanceof TokenizerError) throw e;
    throw new TokenizerError(`${what}: not a valid SentencePiece model (${(e as Error).message})`);
  }
  if (model.pieces.length === 0) throw new TokenizerError(`${what}: no pieces (not a SentencePiece model?)`);
  return model;
}

// ---- writer (tests and tools build tokenizer.model files from a known vocabulary) ----

class Writer {
  private chunks: number[] = [];
  varint(v: bigint | number): void {
    let x = BigInt.asUintN(64, BigInt(v));
    while (x >= 0x80n) { this.chunks.push(Number(x & 0x7fn) | 0x80); x >>= 7n; }
    this.chunks.push(Number(x));
  }
  key(field: number, wire: number): void { this.varint((field << 3) | wire); }
  int(field: number, v: number): void { this.key(field, 0); this.varint(v); }
  bool(field: number, v: boolean): void { this.int(field, v ? 1 : 0); }
  bytes(field: number, b: Uint8Array): void { this.key(field, 2); this.varint(b.length); for (const x of b) this.chunks.push(x); }
  string(field: number, s: string): void { this.bytes(field, new TextEncoder().encode(s)); }
  float(field: number, v: number): void {
    this.key(field, 5);
    const b = new Uint8Array(4);
    new DataView(b.buffer).setFloat32(0, v, true);
    for (const x of b) this.chunks.push(x);
  }
  finish(): Uint8Array { return Uint8Array.from(this.chunks); }
}

/** Serializes a ModelProto (the inverse of parseModelProto for the fields it keeps). */
export function writeModelProto(m: SpModelProto): Uint8Array {
  const w = new Writer();
  for (const p of m.pieces) {
    const pw = new Writer();
    pw.string(1, p.piece);
    pw.float(2, p.score);
    if (p.type !== PieceType.NORMAL) pw.int(3, p.type);
    w.bytes(1, pw.finish());
  }
  const t = new Writer(), s = m.trainer;
  t.int(3, s.modelType); t.int(4, s.vocabSize); t.bool(35, s.byteFallback);
  t.int(40, s.unkId); t.int(41, s.bosId); t.int(42, s.eosId); t.int(43, s.padId);
  w.bytes(2, t.finish());
  const n = new Writer(), ns = m.normalizer;
  n.string(1, ns.name);
  if (ns.precompiledCharsmap.length) n.bytes(2, ns.precompiledCharsmap);
  n.bool(3, ns.addDummyPrefix); n.bool(4, ns.removeExtraWhitespaces); n.bool(5, ns.escapeWhitespaces);
  w.bytes(3, n.finish());
  return w.finish();
}
