// The LLaMA tokenizer behind one interface, from three sources:
//  (a) the vocabulary shipped in llama-tokenizer-js (default, offline),
//  (b) a checkpoint's `tokenizer.json`, through @huggingface/tokenizers,
//  (c) a checkpoint's SentencePiece `tokenizer.model`, parsed and encoded by owlet itself (sentencepiece.ts).
//
// `encode(text)` is what the official code gets from `tokenizer(text, add_special_tokens=False)` with the
// transformers-4.28 slow LlamaTokenizer: SentencePiece adds its dummy prefix "▁" to every call, so each separately
// encoded chunk starts with "▁" ("AI: " → ▁AI : ▁). llama-tokenizer-js does the same when called as
// `encode(text, false, true)`: it prepends one space (its `add_preceding_space`) and maps spaces to "▁", so a text
// with a leading space gets two ("▁▁"), exactly like SentencePiece. The literal special-token strings `<s>`, `</s>`,
// `<unk>` inside a text become their ids and the text around them is encoded piece by piece, as the slow tokenizer's
// no-split-token handling does.
import { readFileSync, existsSync, statSync } from 'node:fs';
import { join, basename } from 'node:path';
import llama from 'llama-tokenizer-js';
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';
import { TokenizerError } from './errors.ts';
import { parseModelProto } from './sentencepiece-proto.ts';
import { SentencePieceBpe, SPACE_SYMBOL } from './sentencepiece.ts';
import { LLAMA_BOS, LLAMA_EOS, LLAMA_UNK } from './llama-vocab.ts';

export interface EncodeOptions {
  /** Prefix BOS (default false: chunks are encoded with add_special_tokens=False and BOS is added once per sample). */
  bos?: boolean;
}

export interface Tokenizer {
  /** Where the vocabulary came from: 'llama-tokenizer-js', or the path of the tokenizer.json / tokenizer.model. */
  readonly source: string;
  readonly vocabSize: number;
  readonly bos: number;
  readonly eos: number;
  /** Padding id (mPLUG-Owl pads with 0 = <unk>). */
  readonly pad: number;
  readonly unk: number;
  /** Ids of one chunk (SentencePiece semantics: dummy prefix "▁", no BOS/EOS unless asked). */
  encode(text: string, options?: EncodeOptions): number[];
  /** Text of ids; special ids and negative (media) ids are skipped, the dummy-prefix space is removed. */
  decode(ids: readonly number[]): string;
  /** The piece string of an id (e.g. "▁Hello", "<0x0A>"), or undefined if out of range. */
  idToPiece(id: number): string | undefined;
}

const BYTE_PIECE = /^<0x([0-9A-Fa-f]{2})>$/;
const escapeRe = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** Shared part: special-token splitting, BOS, decoding from pieces. Subclasses encode one plain chunk. */
abstract class ChunkTokenizer implements Tokenizer {
  abstract readonly source: string;
  abstract readonly vocabSize: number;
  private splitter: RegExp | undefined;
  private specialIds: Map<string, number> | undefined;
  constructor(readonly bos: number, readonly eos: number, readonly unk: number, readonly pad: number) {}

  /** SentencePiece-style ids of a text that holds no special-token strings. */
  protected abstract encodePlain(text: string): number[];
  abstract idToPiece(id: number): string | undefined;
  protected isByteId(id: number): boolean { return BYTE_PIECE.test(this.idToPiece(id) ?? ''); }
  protected isSpecialId(id: number): boolean { return id === this.bos || id === this.eos || id === this.unk || id === this.pad; }
  /** Whether encoding adds the dummy-prefix space (decode then removes one leading space). */
  protected dummyPrefix = true;

  private specials(): Map<string, number> {
    if (!this.specialIds) {
      this.specialIds = new Map();
      for (const id of [this.unk, this.bos, this.eos]) {
        const p = this.idToPiece(id);
        if (p) this.specialIds.set(p, id);
      }
      const alts = [...this.specialIds.keys()].sort((a, b) => b.length - a.length).map(escapeRe);
      this.splitter = alts.length ? new RegExp(`(${alts.join('|')})`) : undefined;
    }
    return this.specialIds;
  }

  encode(text: string, options: EncodeOptions = {}): number[] {
    if (typeof text !== 'string') throw new TokenizerError(`encode: expected a string, got ${typeof text}`);
    const out: number[] = options.bos ? [this.bos] : [];
    const specials = this.specials();
    const parts = this.splitter ? text.split(this.splitter) : [text];
    for (const part of parts) {
      if (!part) continue;
      const id = specials.get(part);
      if (id !== undefined) out.push(id);
      else for (const t of this.encodePlain(part)) out.push(t);
    }
    return out;
  }

  /** The text of `ids`, special tokens (BOS, EOS, padding) and image slots (-1, as prompt ids mark them) left out;
   *  any other id outside the vocabulary throws. */
  decode(ids: readonly number[]): string {
    if (!Array.isArray(ids) && !ArrayBuffer.isView(ids)) throw new TokenizerError(`decode: ids must be an array of token ids, got ${typeof ids}`);
    const bytes: number[] = [];
    const enc = new TextEncoder();
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i];
      if (id === -1) continue;
      if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) {
        throw new TokenizerError(`decode: id ${String(id)} at position ${i} is not in the ${this.vocabSize}-token vocabulary`);
      }
      if (this.isSpecialId(id)) continue;
      const piece = this.idToPiece(id)!;
      const m = this.isByteId(id) ? BYTE_PIECE.exec(piece) : null;
      if (m) bytes.push(parseInt(m[1], 16));
      else for (const b of enc.encode(piece.replaceAll(SPACE_SYMBOL, ' '))) bytes.push(b);
    }
    const s = new TextDecoder('utf-8', { ignoreBOM: true }).decode(Uint8Array.from(bytes)); // (a leading U+FEFF is text too)
    return this.dummyPrefix && s.startsWith(' ') ? s.slice(1) : s;
  }
}

/** (a) The LLaMA vocabulary and BPE of llama-tokenizer-js. */
class LlamaJsTokenizer extends ChunkTokenizer {
  readonly source = 'llama-tokenizer-js';
  readonly vocabSize = llama.vocabById.length;
  constructor() { super(LLAMA_BOS, LLAMA_EOS, LLAMA_UNK, LLAMA_UNK); }
  protected encodePlain(text: string): number[] {
    // add_bos_token=false, add_preceding_space=true: the SentencePiece dummy prefix.
    return llama.encode(text, false, true) ?? [];
  }
  idToPiece(id: number): string | undefined { return llama.vocabById[id]; }
  protected isByteId(id: number): boolean { return id >= 3 && id < 259; }
}

/** (b) A tokenizer.json (HF tokenizers format), e.g. the one a LLaMA checkpoint ships. */
class HfJsonTokenizer extends ChunkTokenizer {
  readonly vocabSize: number;
  private readonly byId: string[];
  constructor(readonly source: string, private readonly hf: HfTokenizer, ids: { bos: number; eos: number; unk: number; pad: number }) {
    super(ids.bos, ids.eos, ids.unk, ids.pad);
    const vocab = hf.get_vocab(true);
    this.byId = [];
    for (const [p, id] of vocab) this.byId[id] = p;
    this.vocabSize = this.byId.length;
  }
  protected encodePlain(text: string): number[] { return this.hf.encode(text, { add_special_tokens: false }).ids; }
  idToPiece(id: number): string | undefined { return this.byId[id]; }
}

/** (c) A SentencePiece tokenizer.model (BPE). */
class SentencePieceTokenizer extends ChunkTokenizer {
  readonly vocabSize: number;
  constructor(readonly source: string, private readonly sp: SentencePieceBpe, ids: { bos: number; eos: number; pad: number }) {
    super(ids.bos, ids.eos, sp.unkId, ids.pad);
    this.vocabSize = sp.vocabSize;
    this.dummyPrefix = sp.addsDummyPrefix;
  }
  protected encodePlain(text: string): number[] { return this.sp.encode(text); }
  idToPiece(id: number): string | undefined { return this.sp.pieces[id]; }
  protected isByteId(id: number): boolean { return this.sp.isByte(id); }
  protected isSpecialId(id: number): boolean { return this.sp.isControl(id) || super.isSpecialId(id); }
}

let defaultTokenizer: Tokenizer | undefined;
/** The default tokenizer: LLaMA's vocabulary from llama-tokenizer-js (no files needed). */
export function llamaTokenizer(): Tokenizer {
  return (defaultTokenizer ??= new LlamaJsTokenizer());
}

type TokenSpec = string | { content?: string } | null | undefined;
const tokenText = (t: TokenSpec): string | undefined => (typeof t === 'string' ? t : t?.content ?? undefined);

function readJson(path: string): Record<string, unknown> {
  let text: string;
  try { text = readFileSync(path, 'utf8'); } catch (e) { throw new TokenizerError(`${path}: cannot read (${(e as Error).message})`); }
  try { return JSON.parse(text) as Record<string, unknown>; } catch (e) { throw new TokenizerError(`${path}: invalid JSON (${(e as Error).message})`); }
}

/** Loads a tokenizer.json; tokenizer_config.json beside it (if present) names the special tokens. */
export function loadTokenizerJson(path: string, configPath?: string): Tokenizer {
  const json = readJson(path);
  const cfgPath = configPath ?? join(path, '..', 'tokenizer_config.json');
  const config = existsSync(cfgPath) ? readJson(cfgPath) : {};
  checkTokenIds(json, path);
  let hf: HfTokenizer;
  try { hf = new HfTokenizer(json, config); } catch (e) { throw new TokenizerError(`${path}: not a loadable tokenizer.json (${(e as Error).message})`); }
  const id = (spec: TokenSpec, fallback: string, def: number): number => {
    const name = tokenText(spec) ?? fallback;
    return hf.token_to_id(name) ?? def;
  };
  // BOS and EOS must be tokens of this vocabulary: LLaMA's ids as a fallback are ordinary pieces of another one (a
  // tokenizer without <s> used to get id 1, which then encoded as BOS and vanished from every decode).
  const required = (spec: TokenSpec, fallback: string, what: string): number => {
    const name = tokenText(spec) ?? fallback, v = hf.token_to_id(name);
    if (v === undefined || v === null) {
      throw new TokenizerError(`${path}: has no ${what} token ${JSON.stringify(name)} (name it as ${what === 'BOS' ? 'bos_token' : 'eos_token'} in tokenizer_config.json)`);
    }
    return v;
  };
  const unk = id(config.unk_token as TokenSpec, '<unk>', LLAMA_UNK);
  const ids = {
    bos: required(config.bos_token as TokenSpec, '<s>', 'BOS'),
    eos: required(config.eos_token as TokenSpec, '</s>', 'EOS'),
    unk,
    pad: config.pad_token ? id(config.pad_token as TokenSpec, '<unk>', unk) : unk,
  };
  return new HfJsonTokenizer(path, hf, ids);
}

// The ids of a tokenizer.json's vocabulary and added tokens must be 0..n-1: a negative id would read as an image slot,
// a gap made decode fail on undefined, and an id of 2^31 took a minute to list (found by the format audit).
function checkTokenIds(json: Record<string, unknown>, path: string): void {
  const model = json.model as { vocab?: unknown } | undefined;
  const ids = new Set<number>();
  const add = (id: unknown, what: string) => {
    if (typeof id !== 'number' || !Number.isInteger(id) || id < 0 || id >= 1 << 24) {
      throw new TokenizerError(`${path}: ${what} has id ${String(id)}, not a whole number in [0, 2^24)`);
    }
    ids.add(id);
  };
  if (Array.isArray(model?.vocab)) model.vocab.forEach((_, i) => ids.add(i));
  else if (model?.vocab && typeof model.vocab === 'object') for (const [p, id] of Object.entries(model.vocab)) add(id, `token ${JSON.stringify(p)}`);
  for (const t of Array.isArray(json.added_tokens) ? json.added_tokens : []) add((t as { id?: unknown })?.id, 'an added token');
  let max = -1;
  for (const id of ids) if (id > max) max = id;
  if (max + 1 !== ids.size) throw new TokenizerError(`${path}: the token ids are not 0..${ids.size - 1} (the largest is ${max})`);
}

/** Loads a SentencePiece tokenizer.model (BPE models with identity normalisation, as LLaMA's). */
export function loadTokenizerModel(path: string): Tokenizer {
  let buf: Uint8Array;
  try { buf = readFileSync(path); } catch (e) { throw new TokenizerError(`${path}: cannot read (${(e as Error).message})`); }
  const proto = parseModelProto(buf, path);
  const sp = new SentencePieceBpe(proto, path);
  const t = proto.trainer;
  const valid = (v: number): boolean => v >= 0 && v < proto.pieces.length;
  if (!valid(t.bosId) || !valid(t.eosId)) {
    throw new TokenizerError(`${path}: the model has no ${valid(t.bosId) ? 'EOS' : 'BOS'} piece (id ${valid(t.bosId) ? t.eosId : t.bosId}); ` +
      'the conversation template needs both');
  }
  return new SentencePieceTokenizer(path, sp, {
    bos: t.bosId,
    eos: t.eosId,
    pad: valid(t.padId) ? t.padId : sp.unkId,
  });
}

/**
 * A tokenizer from a path: a tokenizer.json or tokenizer.model file, or a checkpoint folder holding one
 * (tokenizer.json preferred). No path: the default LLaMA tokenizer.
 */
export function loadTokenizer(path?: string): Tokenizer {
  if (!path) return llamaTokenizer();
  if (!existsSync(path)) throw new TokenizerError(`${path}: no such file or folder`);
  if (statSync(path).isDirectory()) {
    if (existsSync(join(path, 'tokenizer.json'))) return loadTokenizerJson(join(path, 'tokenizer.json'));
    if (existsSync(join(path, 'tokenizer.model'))) return loadTokenizerModel(join(path, 'tokenizer.model'));
    throw new TokenizerError(`${path}: holds neither tokenizer.json nor tokenizer.model`);
  }
  const name = basename(path);
  if (name.endsWith('.json')) return loadTokenizerJson(path);
  if (name.endsWith('.model')) return loadTokenizerModel(path);
  throw new TokenizerError(`${path}: expected a tokenizer.json or tokenizer.model`);
}
