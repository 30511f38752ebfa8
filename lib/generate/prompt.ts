// Token ids of a generation prompt. The official inference processor splits only on `<image>`, so "…\nAI: " is
// encoded inside a larger chunk, while training encodes "\nHuman: " and "AI: " as chunks of their own (spec §4.4
// item 7): the same text gets different ids. 'training' (the default here) encodes prompts the way the model saw them
// in training; 'official' reproduces the official processor.
import { AI_MARKER, IMAGE_TOKEN, SPLIT_MEDIA, SPLIT_TEXT, type Tokenizer } from '../data/index.ts';

export type PromptChunking = 'training' | 'official';

export function promptIds(tok: Pick<Tokenizer, 'encode' | 'bos' | 'eos'>, prompt: string, mediaLen: number, chunking: PromptChunking = 'training'): number[] {
  const ids = [tok.bos];
  const image = () => { for (let j = 0; j < mediaLen; j++) ids.push(-1); };
  if (chunking === 'official') {
    prompt.split(IMAGE_TOKEN).forEach((p, i) => { if (i > 0) image(); if (p.length) ids.push(...tok.encode(p)); });
    return ids;
  }
  const textOnly = !prompt.includes(IMAGE_TOKEN);
  const chunks = textOnly ? prompt.split(SPLIT_TEXT) : prompt.split(SPLIT_MEDIA).filter((c) => c.length > 0);
  // Unlike training data (whose first chunk is the system line), a prompt may start with its image: `<image>` is
  // always an image here. An earlier answer in the prompt (a chunk after "AI: ") ends with EOS, as in training.
  chunks.forEach((c, i) => {
    if (!textOnly && c === IMAGE_TOKEN) image();
    else if (c.length) {
      ids.push(...tok.encode(c));
      if (i > 0 && chunks[i - 1] === AI_MARKER) ids.push(tok.eos);
    } else if (i > 0 && chunks[i - 1] === AI_MARKER && i < chunks.length - 1) {
      ids.push(tok.eos); // an empty earlier answer (text-only prompts keep empty pieces): EOS alone, as in training
    }
  });
  return ids;
}

