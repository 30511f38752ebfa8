// SentencePiece BPE encoding, following sentencepiece's bpe_model.cc and normalizer.cc for the features LLaMA uses:
//  - normalisation "identity" (no precompiled charsmap), optional remove_extra_whitespaces, the dummy prefix "▁",
//    spaces escaped as "▁";
//  - user-defined pieces matched greedily (longest first) as unbreakable symbols;
//  - BPE: repeatedly merge the adjacent pair whose concatenation is a piece with the highest score (ties: leftmost);
//    merged UNUSED pieces are split back into their parts;
//  - symbols that are not pieces become their UTF-8 bytes (<0xNN>) with byte_fallback, else one <unk> per run.
// Unigram models and non-identity normalisation are refused with a typed error rather than encoded wrongly.
import { TokenizerError } from './errors.ts';
import { ModelType, PieceType, type SpModelProto } from './sentencepiece-proto.ts';

export const SPACE_SYMBOL = '\u2581'; // "▁"

interface Pair { left: number; right: number; score: number; size: number }

/** Max-heap of candidate merges: higher score first, then the leftmost. */
class Agenda {
  private heap: Pair[] = [];
  get size(): number { return this.heap.length; }
  private before(a: Pair, b: Pair): boolean { return a.score !== b.score ? a.score > b.score : a.left < b.left; }
  push(p: Pair): void {
    const h = this.heap;
    h.push(p);
    let i = h.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.before(h[i], h[parent])) break;
      [h[i], h[parent]] = [h[parent], h[i]];
      i = parent;
    }
  }
  pop(): Pair {
    const h = this.heap, top = h[0], last = h.pop()!;
    if (h.length) {
      h[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1, r = l + 1;
        let m = i;
        if (l < h.length && this.before(h[l], h[m])) m = l;
        if (r < h.length && this.before(h[r], h[m])) m = r;
        if (m === i) break;
        [h[i], h[m]] = [h[m], h[i]];
        i = m;
      }
    }
    return top;
  }
}

const BYTE_PIECE = /^<0x([0-9A-Fa-f]{2})>$/;

export class SentencePieceBpe {
  readonly pieces: string[];
  readonly types: Uint8Array;
  private readonly scores: Float32Array;
  /** NORMAL, USER_DEFINED and UNUSED pieces: the ones merges may produce (sentencepiece's `pieces_`). */
  private readonly mergeable = new Map<string, number>();
  /** CONTROL, UNKNOWN and BYTE pieces (sentencepiece's `reserved_id_map_`). */
  private readonly reserved = new Map<string, number>();
  private readonly userDefined: string[];
  private readonly byteIds = new Int32Array(256).fill(-1);
  readonly unkId: number;
  readonly byteFallback: boolean;
  private readonly addDummyPrefix: boolean;
  private readonly removeExtraWhitespaces: boolean;
  private readonly escapeWhitespaces: boolean;

  constructor(model: SpModelProto, what = 'tokenizer.model') {
    if (model.trainer.modelType !== ModelType.BPE) {
      const name = Object.entries(ModelType).find(([, v]) => v === model.trainer.modelType)?.[0] ?? String(model.trainer.modelType);
      throw new TokenizerError(`${what}: SentencePiece model type ${name} is not supported (only BPE, which LLaMA uses)`);
    }
    const nm = model.normalizer;
    if (nm.precompiledCharsmap.length > 0 || (nm.name !== '' && nm.name !== 'identity')) {
      throw new TokenizerError(`${what}: normalisation rule "${nm.name}" is not supported (only "identity", which LLaMA uses)`);
    }
    this.pieces = model.pieces.map((p) => p.piece);
    this.types = Uint8Array.from(model.pieces, (p) => p.type);
    this.scores = Float32Array.from(model.pieces, (p) => p.score);
    let unk = -1;
    const user: string[] = [];
    model.pieces.forEach((p, id) => {
      const normal = p.type === PieceType.NORMAL || p.type === PieceType.USER_DEFINED || p.type === PieceType.UNUSED;
      (normal ? this.mergeable : this.reserved).set(p.piece, id);
      if (p.type === PieceType.UNKNOWN) unk = id;
      if (p.type === PieceType.USER_DEFINED) user.push(p.piece);
      if (p.type === PieceType.BYTE) {
        const m = BYTE_PIECE.exec(p.piece);
        if (m) this.byteIds[parseInt(m[1], 16)] = id;
      }
    });
    if (unk < 0) throw new TokenizerError(`${what}: the model has no UNKNOWN piece`);
    this.unkId = unk;
    this.byteFallback = model.trainer.byteFallback;
    if (this.byteFallback && this.byteIds.some((v) => v < 0)) {
      throw new TokenizerError(`${what}: byte_fallback is set but not all 256 <0xNN> byte pieces exist`);
    }
    this.userDefined = user.sort((a, b) => b.length - a.length); // longest match first
    this.addDummyPrefix = nm.addDummyPrefix;
    this.removeExtraWhitespaces = nm.removeExtraWhitespaces;
    this.escapeWhitespaces = nm.escapeWhitespaces;
  }

  get vocabSize(): number { return this.pieces.length; }
  get addsDummyPrefix(): boolean { return this.addDummyPrefix; }
  pieceToId(piece: string): number { return this.reserved.get(piece) ?? this.mergeable.get(piece) ?? this.unkId; }
  isByte(id: number): boolean { return this.types[id] === PieceType.BYTE; }
  isControl(id: number): boolean { return this.types[id] === PieceType.CONTROL || this.types[id] === PieceType.UNKNOWN; }

  /** sentencepiece's identity normaliser: whitespace handling and the dummy prefix only. */
  normalize(text: string): string {
    if (text.length === 0) return '';
    let s = text;
    if (this.removeExtraWhitespaces) s = s.replace(/^ +| +$/g, '').replace(/ {2,}/g, ' ');
    if (s.length === 0) return '';
    if (this.addDummyPrefix) s = ' ' + s;
    return this.escapeWhitespaces ? s.replaceAll(' ', SPACE_SYMBOL) : s;
  }

  /** Ids of one text as `sp.encode(text)` gives them (no BOS/EOS). */
  encode(text: string): number[] {
    const norm = this.normalize(text);
    if (!norm) return [];
    // Initial symbols: user-defined pieces (frozen) or single code points.
    const sym: string[] = [], frozen: boolean[] = [];
    for (let i = 0; i < norm.length;) {
      const u = this.userDefined.find((p) => norm.startsWith(p, i));
      if (u) { sym.push(u); frozen.push(true); i += u.length; continue; }
      const c = String.fromCodePoint(norm.codePointAt(i)!);
      sym.push(c); frozen.push(false); i += c.length;
    }
    const n = sym.length;
    const prev = Int32Array.from({ length: n }, (_, i) => i - 1);
    const next = Int32Array.from({ length: n }, (_, i) => (i + 1 < n ? i + 1 : -1));
    const agenda = new Agenda();
    const revMerge = new Map<string, [string, string]>();
    const tryPair = (l: number, r: number): void => {
      if (l < 0 || r < 0 || frozen[l] || frozen[r]) return;
      const piece = sym[l] + sym[r];
      const id = this.mergeable.get(piece);
      if (id === undefined) return;
      agenda.push({ left: l, right: r, score: this.scores[id], size: piece.length });
      if (this.types[id] === PieceType.UNUSED) revMerge.set(piece, [sym[l], sym[r]]);
    };
    for (let i = 1; i < n; i++) tryPair(i - 1, i);
    while (agenda.size) {
      const top = agenda.pop();
      const l = top.left, r = top.right;
      // Stale entry: one side was merged away or changed since the pair was queued.
      if (!sym[l] || !sym[r] || sym[l].length + sym[r].length !== top.size || next[l] !== r) continue;
      sym[l] += sym[r];
      sym[r] = '';
      next[l] = next[r];
      if (next[r] >= 0) prev[next[r]] = l;
      tryPair(prev[l], l);
      tryPair(l, next[l]);
    }
    const out: number[] = [];
    let prevUnk = false;
    const emit = (piece: string): void => {
      const id = this.pieceToId(piece);
      if (id !== this.unkId) { out.push(id); prevUnk = false; return; }
      if (this.byteFallback) {
        for (const b of new TextEncoder().encode(piece)) out.push(this.byteIds[b]);
        prevUnk = false;
        return;
      }
      if (!prevUnk) out.push(id); // consecutive unknown symbols collapse into one <unk>
      prevUnk = true;
    };
    const resegment = (piece: string): void => {
      const id = this.mergeable.get(piece);
      const parts = id !== undefined && this.types[id] === PieceType.UNUSED ? revMerge.get(piece) : undefined;
      if (!parts) { emit(piece); return; }
      resegment(parts[0]);
      resegment(parts[1]);
    };
    for (let i = 0; i >= 0; i = next[i]) resegment(sym[i]);
    return out;
  }
}
