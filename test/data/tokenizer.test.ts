// Tokenizer ids. Reference values: ids of the real SentencePiece library (python sentencepiece 0.2.2,
// `SentencePieceProcessor.encode`) run on a tokenizer.model rebuilt from the LLaMA vocabulary with the official merge
// order (llamaModelProto); they agree with llama-tokenizer-js's own reference cases (taken from the official
// tokenizer: "grabbed", " grabbed", 11 spaces, 🦙, 镇) and with `Hello world` → 15043 3186. All three loaders must
// give these ids, chunk by chunk, with the SentencePiece dummy prefix and without BOS unless asked.
import test from 'ava';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  llamaTokenizer, loadTokenizer, loadTokenizerJson, loadTokenizerModel, type Tokenizer,
} from '../../lib/data/tokenizer.ts';
import { llamaModelProto, llamaTokenizerJson, llamaTokenizerConfig } from '../../lib/data/llama-vocab.ts';
import { writeModelProto, parseModelProto, PieceType, ModelType, type SpModelProto } from '../../lib/data/sentencepiece-proto.ts';
import { SentencePieceBpe } from '../../lib/data/sentencepiece.ts';
import { TokenizerError } from '../../lib/data/errors.ts';

const GOLDEN: [string, number[]][] = [
  ["The following is a conversation between a curious human and AI assistant. The assistant gives helpful, detailed, and polite answers to the user's questions.", [450, 1494, 338, 263, 14983, 1546, 263, 12758, 5199, 322, 319, 29902, 20255, 29889, 450, 20255, 4076, 8444, 29892, 13173, 29892, 322, 1248, 568, 6089, 304, 278, 1404, 29915, 29879, 5155, 29889]],
  ["AI: ", [319, 29902, 29901, 29871]],
  ["\nHuman: ", [29871, 13, 29950, 7889, 29901, 29871]],
  ["<image>", [529, 3027, 29958]],
  ["def add(a, b):\n    return a + b  # sum", [822, 788, 29898, 29874, 29892, 289, 1125, 13, 1678, 736, 263, 718, 289, 29871, 396, 2533]],
  ["中文分词：我爱北京天安门。", [29871, 30275, 30333, 30748, 235, 178, 144, 30383, 30672, 234, 139, 180, 30662, 30675, 30408, 30670, 31649, 30267]],
  ["emoji 🦙🔥👍🏽 ok", [953, 29877, 2397, 29871, 243, 162, 169, 156, 243, 162, 151, 168, 243, 162, 148, 144, 243, 162, 146, 192, 3431]],
  [" leading space", [29871, 8236, 2913]],
  ["   three leading", [1678, 2211, 8236]],
  ["trailing  ", [25053, 259]],
  ["What color is the circle?", [1724, 2927, 338, 278, 8607, 29973]],
  ["a red circle, a blue square and a green triangle.", [263, 2654, 8607, 29892, 263, 7254, 6862, 322, 263, 7933, 17205, 29889]],
  ["What is 7 plus 8?", [1724, 338, 29871, 29955, 2298, 29871, 29947, 29973]],
  ["Tab\tand\r\nCRLF", [11090, 12, 392, 30004, 13, 29907, 2241, 29943]],
  ["naïve café – “quotes” …", [1055, 30085, 345, 274, 28059, 785, 1346, 339, 4769, 30024, 16088]],
  ["", []],
  ["한국어 텍스트", [29871, 30877, 31293, 31129, 29871, 240, 136, 144, 30784, 31177]],
  ["if (x <= 10) { y += x; }", [565, 313, 29916, 5277, 29871, 29896, 29900, 29897, 426, 343, 4619, 921, 29936, 500]],
  ['grabbed', [2646, 1327, 287]],
  [' grabbed', [29871, 2646, 1327, 287]],
  ['           grabbed', [9651, 2646, 1327, 287]],
  ['Hello world', [15043, 3186]],
  ['🦙Ꙋ', [29871, 243, 162, 169, 156, 237, 156, 141]],
];

const dir = mkdtempSync(join(tmpdir(), 'owlet-tok-'));
test.after.always(() => rmSync(dir, { recursive: true, force: true }));

let fromJson: Tokenizer, fromModel: Tokenizer;
test.before(() => {
  writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(llamaTokenizerJson()));
  writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify(llamaTokenizerConfig()));
  writeFileSync(join(dir, 'tokenizer.model'), writeModelProto(llamaModelProto()));
  fromJson = loadTokenizerJson(join(dir, 'tokenizer.json'));
  fromModel = loadTokenizerModel(join(dir, 'tokenizer.model'));
});

const all = (): [string, Tokenizer][] => [['llama-tokenizer-js', llamaTokenizer()], ['tokenizer.json', fromJson], ['tokenizer.model', fromModel]];

test('every loader gives the reference ids on code, CJK, emoji, leading spaces and the template', (t) => {
  for (const [name, tok] of all()) {
    for (const [text, ids] of GOLDEN) t.deepEqual(tok.encode(text), ids, `${name}: ${JSON.stringify(text)}`);
  }
});

test('special ids, BOS on request, vocabulary size', (t) => {
  for (const [name, tok] of all()) {
    t.deepEqual([tok.unk, tok.bos, tok.eos, tok.pad, tok.vocabSize], [0, 1, 2, 0, 32000], name);
    t.deepEqual(tok.encode('Hello world', { bos: true }), [1, 15043, 3186], name);
    t.deepEqual(tok.encode('', { bos: true }), [1], name);
    // Literal special-token strings become their ids; the text around them is encoded piece by piece.
    t.deepEqual(tok.encode('Hi</s>there'), [...tok.encode('Hi'), 2, ...tok.encode('there')], name);
    t.is(tok.idToPiece(15043), '\u2581Hello', name);
  }
});

test('chunks are encoded separately, each with its own dummy prefix', (t) => {
  const tok = llamaTokenizer();
  // "AI: " + "yes." as two chunks (training) differs from one chunk (inference prompt).
  t.deepEqual(tok.encode('AI: '), [319, 29902, 29901, 29871]);
  t.deepEqual(tok.encode('yes.'), [4874, 29889]);
  t.notDeepEqual([...tok.encode('AI: '), ...tok.encode('yes.')], tok.encode('AI: yes.'));
});

test('decode inverts encode and skips special and media ids', (t) => {
  for (const [name, tok] of all()) {
    for (const [text, ids] of GOLDEN) t.is(tok.decode(ids), text, `${name}: ${JSON.stringify(text)}`);
    t.is(tok.decode([1, 15043, -1, -1, 3186, 2, 0]), 'Hello world', name);
  }
});

test('loadTokenizer picks the file by name or folder content and names what is wrong', (t) => {
  t.is(loadTokenizer().source, 'llama-tokenizer-js');
  t.is(loadTokenizer(dir).source, join(dir, 'tokenizer.json'));
  t.is(loadTokenizer(join(dir, 'tokenizer.model')).source, join(dir, 'tokenizer.model'));
  t.throws(() => loadTokenizer(join(dir, 'nope')), { instanceOf: TokenizerError, message: /no such file/ });
  const bad = join(dir, 'bad.model');
  writeFileSync(bad, Buffer.from('this is not a protobuf'));
  t.throws(() => loadTokenizerModel(bad), { instanceOf: TokenizerError, message: /bad\.model/ });
  const badJson = join(dir, 'bad.json');
  writeFileSync(badJson, '{"model": ');
  t.throws(() => loadTokenizerJson(badJson), { instanceOf: TokenizerError, message: /invalid JSON/ });
});

test('the ModelProto writer and parser round-trip', (t) => {
  const m = llamaModelProto();
  const back = parseModelProto(writeModelProto(m));
  t.is(back.pieces.length, 32000);
  t.deepEqual(back.pieces[15043], { piece: '\u2581Hello', score: -(15043 - 259), type: PieceType.NORMAL });
  t.deepEqual(back.pieces[3], { piece: '<0x00>', score: 0, type: PieceType.BYTE });
  t.deepEqual(back.trainer, m.trainer);
  t.deepEqual({ ...back.normalizer, precompiledCharsmap: [...back.normalizer.precompiledCharsmap] }, { ...m.normalizer, precompiledCharsmap: [] });
});

// SentencePiece features LLaMA does not use, checked against the real library on a hand-made model: user-defined
// pieces, UNUSED pieces (merged, then split back), unknowns without byte fallback (one <unk> per run),
// remove_extra_whitespaces and add_dummy_prefix switched on and off.
function tinyModel(removeExtra: boolean, dummy: boolean): SpModelProto {
  const P = (piece: string, score: number, type: number = PieceType.NORMAL) => ({ piece, score, type });
  const pieces = [P('<unk>', 0, PieceType.UNKNOWN), P('<s>', 0, PieceType.CONTROL), P('</s>', 0, PieceType.CONTROL),
    P('<sep>', 0, PieceType.USER_DEFINED), P('\u2581', -10), P('a', -11), P('b', -12), P('c', -13), P('d', -14), P('ab', -1),
    P('bc', -0.5), P('abc', -2), P('\u2581a', -3), P('cd', -0.1, PieceType.UNUSED), P('\u2581ab', -4), P('dd', -1),
    P('cdd', -0.2), P('\u2581\u2581', -5)];
  return {
    pieces,
    trainer: { modelType: ModelType.BPE, vocabSize: pieces.length, byteFallback: false, unkId: 0, bosId: 1, eosId: 2, padId: -1 },
    normalizer: { name: 'identity', precompiledCharsmap: new Uint8Array(0), addDummyPrefix: dummy, removeExtraWhitespaces: removeExtra, escapeWhitespaces: true },
  };
}
const TINY_DEFAULT: [string, number[]][] = [
    ["abc", [4, 11]],
    ["  ab  c  ", [14, 4, 7]],
    ["xyz", [4, 0]],
    ["ab<sep>cd", [14, 3, 7, 8]],
    ["cdd", [4, 16]],
    ["abcd", [14, 7, 8]],
    ["a b", [12, 4, 6]],
    ["d ab", [4, 8, 14]],
    ["xxab xy", [4, 0, 9, 4, 0]],
    ["   ", []],
    ["bcd", [4, 6, 7, 8]],
    ["ab▁c", [14, 4, 7]],
];
const TINY_RAW: [string, number[]][] = [
    ["abc", [11]],
    ["  ab  c  ", [4, 14, 17, 7, 17]],
    ["xyz", [0]],
    ["ab<sep>cd", [9, 3, 7, 8]],
    ["cdd", [16]],
    ["abcd", [9, 7, 8]],
    ["a b", [5, 4, 6]],
    ["d ab", [8, 14]],
    ["xxab xy", [0, 9, 4, 0]],
    ["   ", [17, 4]],
    ["bcd", [6, 7, 8]],
    ["ab▁c", [9, 4, 7]],
];

test('SentencePiece BPE matches the reference library on a hand-made model', (t) => {
  const sp1 = new SentencePieceBpe(parseModelProto(writeModelProto(tinyModel(true, true))));
  for (const [s, ids] of TINY_DEFAULT) t.deepEqual(sp1.encode(s), ids, JSON.stringify(s));
  const sp2 = new SentencePieceBpe(parseModelProto(writeModelProto(tinyModel(false, false))));
  for (const [s, ids] of TINY_RAW) t.deepEqual(sp2.encode(s), ids, JSON.stringify(s));
});

test('unsupported SentencePiece models are refused with a typed error', (t) => {
  const uni = tinyModel(true, true);
  uni.trainer.modelType = ModelType.UNIGRAM;
  t.throws(() => new SentencePieceBpe(uni), { instanceOf: TokenizerError, message: /UNIGRAM/ });
  const nfkc = tinyModel(true, true);
  nfkc.normalizer.name = 'nmt_nfkc';
  nfkc.normalizer.precompiledCharsmap = new Uint8Array([1, 2, 3]);
  t.throws(() => new SentencePieceBpe(nfkc), { instanceOf: TokenizerError, message: /nmt_nfkc/ });
});
