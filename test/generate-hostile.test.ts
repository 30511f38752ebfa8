// Hostile generation requests (robustness audit): prompts whose images the model could not see as asked, and image
// arguments that are not tensors, are refused naming the request, before any work.
import test from 'ava';
import { llamaTokenizer } from '../lib/data/index.ts';
import { generateIds } from '../lib/generate/index.ts';
import { ArgumentError, OwletError, liveTensors, tensor, type Tensor } from '../lib/tensor/index.ts';
import { tinyOwl } from './helpers/tiny-owl.ts';

const tok = llamaTokenizer();
const model = tinyOwl({ seed: 4 });
const image = (v: number): Tensor => tensor(new Float32Array(3 * 28 * 28).fill(v), [3, 28, 28]);

// "<image><image>" became one run of media ids, read by the splice as ONE image: the second image was encoded and then
// silently left out of the answer (its positions kept the embedding of the placeholder id).
test('placeholders with no text between them are refused: the model would see only the first image', (t) => {
  const [a, b] = [image(0.1), image(-0.4)];
  const live = liveTensors();
  for (const chunking of ['training', 'official'] as const) {
    t.throws(() => generateIds(model, tok, [{ prompt: 'Human: <image><image>\nHuman: Compare them.\nAI: ', images: [a, b] }], { greedy: true, maxNewTokens: 2, chunking }),
      { instanceOf: ArgumentError, message: /request 0's 2 <image> placeholders make 1 image run\(s\)/ }, chunking);
  }
  t.is(liveTensors(), live);
  // the template's layout (one "Human: <image>" line per image) and any text between them are fine
  const ok = generateIds(model, tok, [{ prompt: 'Human: <image>\nHuman: <image>\nHuman: Compare them.\nAI: ', images: [a, b] },
    { prompt: '<image> <image>', images: [a, b] }], { greedy: true, maxNewTokens: 2 });
  t.is(ok.length, 2);
  a.dispose();
  b.dispose();
});

// A Float32Array (or a nested array) where a Tensor belongs failed deep inside with "im.shape is not iterable".
test('images that are not tensors are a named argument error', (t) => {
  for (const bad of [new Float32Array(3 * 28 * 28), [[0]], null]) {
    t.throws(() => generateIds(model, tok, [{ prompt: '<image>hi', images: [bad as never] }], { greedy: true, maxNewTokens: 1 }),
      { instanceOf: ArgumentError, message: /request 0: images must be an array of Tensors/ });
  }
});

// A model whose logits are NaN (here: the final norm's weight) generated ids anyway: greedy took id 0 at every step (no
// logit compares greater than NaN), sampling the last id of its sort — text that looks like an answer.
test('NaN logits stop generation naming the step, for greedy and sampled decoding, leaving no tensor behind', (t) => {
  const sick = tinyOwl({ seed: 4 });
  const name = 'language_model.model.norm.weight';
  const healthy = sick.params.get(name)!;
  sick.params.set(name, tensor(new Float32Array(healthy.shape[0]).fill(NaN), healthy.shape));
  healthy.dispose();
  const live = liveTensors();
  for (const o of [{ greedy: true }, { temperature: 0.7, topK: 5, topP: 0.9 }]) {
    t.throws(() => generateIds(sick, tok, [{ prompt: 'Human: hi\nAI: ' }], { ...o, maxNewTokens: 3 }),
      { instanceOf: OwletError, message: /^generate: step 0, request 0: the next-token logits hold NaN/ }, JSON.stringify(o));
  }
  t.is(liveTensors(), live);
  for (const p of sick.params.values()) p.dispose();
});
