// The LLaMA vocabulary shipped in llama-tokenizer-js (taken from the official tokenizer.json), and the two on-disk
// tokenizer formats rebuilt from it: an HF `tokenizer.json` (BPE with byte fallback, as transformers' LlamaConverter
// writes it) and a SentencePiece `tokenizer.model`. A checkpoint can ship either so other tools load the same ids.
import llama from 'llama-tokenizer-js';
import { ModelType, PieceType, type SpModelProto } from './sentencepiece-proto.ts';

export const LLAMA_BOS = 1;
export const LLAMA_EOS = 2;
export const LLAMA_UNK = 0;

export interface LlamaVocab {
  /** Piece strings by id (32000). */
  pieces: readonly string[];
  /** Merges "left right" in priority order (HF tokenizer.json order, i.e. by the merged piece's score). */
  merges: readonly string[];
}

let cached: LlamaVocab | undefined;
export function llamaVocab(): LlamaVocab {
  if (!cached) {
    const merges = [...llama.merges.entries()].sort((a, b) => a[1] - b[1]).map(([k]) => k);
    cached = { pieces: llama.vocabById, merges };
  }
  return cached;
}

const isByte = (id: number): boolean => id >= 3 && id < 259;
/** Whitespace-only pieces of two or more "▁": LLaMA gives them one very low score, which is why their merges come
 * last in the official tokenizer.json (sorted by score) and why "▁▁" loses to "▁x" merges. */
const isSpaceRun = (p: string): boolean => /^\u2581{2,}$/.test(p);
const SPACE_RUN_SCORE = -1e9;

/** A tokenizer.json equivalent to the official LLaMA one (transformers' LlamaConverter layout). */
export function llamaTokenizerJson(v: LlamaVocab = llamaVocab()): Record<string, unknown> {
  const vocab: Record<string, number> = {};
  v.pieces.forEach((p, i) => { vocab[p] = i; });
  const special = (id: number) => ({ id, content: v.pieces[id], single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
  return {
    version: '1.0', truncation: null, padding: null,
    added_tokens: [special(0), special(1), special(2)],
    normalizer: { type: 'Sequence', normalizers: [{ type: 'Prepend', prepend: '\u2581' }, { type: 'Replace', pattern: { String: ' ' }, content: '\u2581' }] },
    pre_tokenizer: null,
    post_processor: {
      type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
      pair: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }, { SpecialToken: { id: '<s>', type_id: 1 } }, { Sequence: { id: 'B', type_id: 1 } }],
      special_tokens: { '<s>': { id: '<s>', ids: [1], tokens: ['<s>'] } },
    },
    decoder: { type: 'Sequence', decoders: [{ type: 'Replace', pattern: { String: '\u2581' }, content: ' ' }, { type: 'ByteFallback' }, { type: 'Fuse' }, { type: 'Strip', content: ' ', start: 1, stop: 0 }] },
    model: { type: 'BPE', dropout: null, unk_token: '<unk>', continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: true, byte_fallback: true, vocab, merges: [...v.merges] },
  };
}

/** The tokenizer_config.json that goes with it (LLaMA special tokens; pad = <unk> as mPLUG-Owl uses). */
export function llamaTokenizerConfig(): Record<string, unknown> {
  return { tokenizer_class: 'LlamaTokenizer', bos_token: '<s>', eos_token: '</s>', unk_token: '<unk>', pad_token: '<unk>', add_bos_token: true, add_eos_token: false, model_max_length: 2048 };
}

/** A SentencePiece ModelProto with LLaMA's settings (BPE, byte fallback, identity normaliser, dummy prefix, no
 * whitespace collapsing). Scores: -(id − 259) for ordinary pieces, as in LLaMA where piece ids follow merge order,
 * and one low score for whitespace runs; this reproduces the merge order of the official tokenizer.json. */
export function llamaModelProto(v: LlamaVocab = llamaVocab()): SpModelProto {
  const pieces = v.pieces.map((piece, id) => {
    if (id === LLAMA_UNK) return { piece, score: 0, type: PieceType.UNKNOWN };
    if (id === LLAMA_BOS || id === LLAMA_EOS) return { piece, score: 0, type: PieceType.CONTROL };
    if (isByte(id)) return { piece, score: 0, type: PieceType.BYTE };
    return { piece, score: isSpaceRun(piece) ? SPACE_RUN_SCORE : -(id - 259), type: PieceType.NORMAL };
  });
  return {
    pieces,
    trainer: { modelType: ModelType.BPE, vocabSize: pieces.length, byteFallback: true, unkId: 0, bosId: 1, eosId: 2, padId: -1 },
    normalizer: { name: 'identity', precompiledCharsmap: new Uint8Array(0), addDummyPrefix: true, removeExtraWhitespaces: false, escapeWhitespaces: true },
  };
}
