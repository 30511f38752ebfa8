// Sample construction exactly as the official `_extract_text_token_from_conversation` (spec §4.4), plus the stage-1
// caption sample the spec recommends (§4.2). Output: `input_ids` of length L+1 and three masks of length L aligned
// with "predict token i+1 from position i". Only response tokens and the EOS closing each response are labelled.
import type { Tokenizer } from './tokenizer.ts';
import { SampleError } from './errors.ts';
import { AI_MARKER, countImageTokens, HUMAN_MARKER, IMAGE_TOKEN } from './template.ts';

export interface SequenceOptions {
  /** L: samples become L+1 ids (official --seq-length). */
  maxLength: number;
  /** Ids per `<image>`: queries + 1 (65 for mPLUG-Owl). */
  mediaTokenLength: number;
  /** The id that fills an image's positions (official: -1). */
  mediaTokenId?: number;
  /** Stage-1 caption records: a conversation prefix holding one `<image>` and ending with "AI: " that the caption
   *  follows as the response (the official stage-1 prompt is unknown, spec §4.2; default: none, BOS + image +
   *  caption + EOS). */
  captionPrompt?: string;
}

/** Why a caption prompt cannot be used, or null when it can. */
export function captionPromptProblem(p: string): string | null {
  if (countImageTokens(p) !== 1) return `must hold exactly one ${IMAGE_TOKEN}, it holds ${countImageTokens(p)}`;
  if (!p.endsWith(AI_MARKER)) return `must end with "${AI_MARKER}" (the caption is the response that follows)`;
  if (p.startsWith(IMAGE_TOKEN)) return `must start with text before ${IMAGE_TOKEN} (the first piece of a conversation is always read as text)`;
  return null;
}

export interface TokenizedSample {
  /** L+1 ids: BOS, text, runs of media ids, EOS after each response, padding. */
  inputIds: Int32Array;
  /** L: 1 where the next token (i+1) is a response token or its EOS. */
  promptMask: Uint8Array;
  /** L: 1 for i < seqLength − 1. */
  nonPaddingMask: Uint8Array;
  /** L: 1 where ids[i+1] ≥ 0 (all ones for text-only samples). */
  nonMediaMask: Uint8Array;
  /** Ids before padding (official `enc_length`). */
  seqLength: number;
  /** `<image>` runs actually placed (a placeholder cut off by truncation is not). */
  mediaRuns: number;
  /** Targets that count in the loss: Σ nonPadding·nonMedia·prompt. 0 means the sample gives a NaN loss officially. */
  labelCount: number;
  /** Ids the sample would have without the L+1 limit (before padding). */
  fullLength: number;
  /** True when something was cut to fit L+1 (fullLength > L+1). */
  truncated: boolean;
}

/** The official splits: text-only samples keep empty pieces, samples with images drop them (spec §4.4). */
export const SPLIT_TEXT = /(AI: |\nHuman: )/;
export const SPLIT_MEDIA = /(<image>|AI: |\nHuman: )/;

function checkOptions(o: SequenceOptions): void {
  if (!Number.isInteger(o.maxLength) || o.maxLength < 1) throw new SampleError(`maxLength must be a positive integer, got ${o.maxLength}`);
  if (!Number.isInteger(o.mediaTokenLength) || o.mediaTokenLength < 1) {
    throw new SampleError(`mediaTokenLength must be a positive integer, got ${o.mediaTokenLength}`);
  }
  if ((o.mediaTokenId ?? -1) >= 0) throw new SampleError(`mediaTokenId must be negative, got ${o.mediaTokenId}`);
}

/** Pads to L+1 and derives the masks (official steps 5–6). */
function finish(ids: number[], labels: number[], textOnly: boolean, o: SequenceOptions, mediaRuns: number, fullLength: number,
  pad: number): TokenizedSample {
  const L = o.maxLength;
  const seqLength = ids.length;
  if (seqLength > L + 1) {
    // The official code fails its length assertion here and the sample is skipped.
    throw new SampleError(`sample has ${seqLength} ids after truncation, more than max_length+1 = ${L + 1} (the text before the first marker is too long)`);
  }
  const inputIds = new Int32Array(L + 1).fill(pad);
  inputIds.set(ids);
  const promptMask = new Uint8Array(L), nonPaddingMask = new Uint8Array(L), nonMediaMask = new Uint8Array(L);
  let labelCount = 0;
  for (let i = 0; i < L; i++) {
    promptMask[i] = i + 1 < labels.length ? labels[i + 1] : 0;
    nonPaddingMask[i] = i < seqLength - 1 ? 1 : 0;
    nonMediaMask[i] = textOnly || inputIds[i + 1] >= 0 ? 1 : 0;
    labelCount += promptMask[i] & nonPaddingMask[i] & nonMediaMask[i];
  }
  return { inputIds, promptMask, nonPaddingMask, nonMediaMask, seqLength, mediaRuns, labelCount, fullLength, truncated: fullLength > L + 1 };
}

/**
 * Tokenises an instruction sample (`text` in the conversation template) as the official code does:
 * chunks split on "AI: " / "\nHuman: " (and "<image>" when the text has one), each chunk encoded separately,
 * a chunk after "AI: " is a response (label 1, followed by EOS, truncated so that len(ids) stays ≤ L before EOS);
 * others get label 0 and are cut to fit L+1. Python's slicing semantics are kept (a negative stop drops from the end).
 */
export function tokenizeConversation(text: string, tok: Tokenizer, o: SequenceOptions): TokenizedSample {
  checkOptions(o);
  const L = o.maxLength, M = o.mediaTokenLength, media = o.mediaTokenId ?? -1;
  const bos = tok.bos > 0 ? [tok.bos] : [];
  let ids: number[] = [], labels: number[] = [];
  let encLength = 0, mediaRuns = 0, stopped = false;
  const push = (chunk: number[], label: number): void => {
    for (const t of chunk) { ids.push(t); labels.push(label); }
    encLength += chunk.length;
  };
  const textOnly = !text.includes(IMAGE_TOKEN);
  if (textOnly) {
    const chunks = text.split(SPLIT_TEXT); // empty pieces are kept
    for (let idx = 0; idx < chunks.length; idx++) {
      let stop = false;
      if (idx === 0) {
        ids = [...bos, ...tok.encode(chunks[0])];
        labels = ids.map(() => 0);
        encLength = ids.length;
        continue;
      }
      let cur = tok.encode(chunks[idx]);
      if (chunks[idx - 1] === AI_MARKER) {
        if (encLength + cur.length >= L) { cur = cur.slice(0, L - encLength); stop = true; }
        cur.push(tok.eos);
        push(cur, 1);
      } else {
        if (encLength + cur.length >= L + 1) { cur = cur.slice(0, L + 1 - encLength); stop = true; }
        push(cur, 0);
      }
      if (stop) { stopped = true; break; }
    }
  } else {
    const chunks = text.split(SPLIT_MEDIA).filter((c) => c.length > 0); // empty pieces are dropped
    for (let idx = 0; idx < chunks.length; idx++) {
      if (encLength >= L + 1) { stopped = true; break; }
      const c = chunks[idx];
      if (idx === 0) {
        // The first piece is always encoded as text, even if it is "<image>" (official behaviour).
        ids = [...bos, ...tok.encode(c)];
        labels = ids.map(() => 0);
        encLength = ids.length;
      } else if (c === IMAGE_TOKEN) {
        if (encLength + M > L + 1) { stopped = true; break; }
        push(new Array<number>(M).fill(media), 0);
        mediaRuns++;
      } else if (chunks[idx - 1] === AI_MARKER) {
        let cur = tok.encode(c);
        if (encLength + cur.length >= L) { stopped ||= encLength + cur.length > L; cur = cur.slice(0, L - encLength); }
        cur.push(tok.eos);
        push(cur, 1);
      } else {
        let cur = tok.encode(c);
        if (encLength + cur.length >= L + 1) { stopped ||= encLength + cur.length > L + 1; cur = cur.slice(0, L + 1 - encLength); }
        push(cur, 0);
      }
    }
  }
  const full = stopped ? untruncatedLength(text, tok, o) : ids.length;
  return finish(ids, labels, textOnly, o, mediaRuns, full, tok.pad);
}

/** The number of ids a sample would have with no length limit: BOS, every chunk, an EOS per response, M per image. */
export function untruncatedLength(text: string, tok: Tokenizer, o: SequenceOptions): number {
  const textOnly = !text.includes(IMAGE_TOKEN);
  const chunks = textOnly ? text.split(SPLIT_TEXT) : text.split(SPLIT_MEDIA).filter((c) => c.length > 0);
  let n = tok.bos > 0 ? 1 : 0;
  chunks.forEach((c, idx) => {
    if (idx > 0 && !textOnly && c === IMAGE_TOKEN) n += o.mediaTokenLength;
    else n += tok.encode(c).length + (idx > 0 && chunks[idx - 1] === AI_MARKER ? 1 : 0);
  });
  return n;
}

/**
 * A stage-1 caption sample (spec §4.2 recommendation): BOS + one image's media ids + caption + EOS, loss on the
 * caption and EOS only; with `captionPrompt`, the conversation prompt + caption as its response. A long caption is cut so that the sequence (with EOS) is L+1 ids.
 */
export function tokenizeCaption(caption: string, tok: Tokenizer, o: SequenceOptions): TokenizedSample {
  checkOptions(o);
  if (o.captionPrompt !== undefined) {
    const why = captionPromptProblem(o.captionPrompt);
    if (why) throw new SampleError(`caption prompt ${JSON.stringify(o.captionPrompt)} ${why}`);
    // After the prompt, a literal "<image>" in the caption is a second placeholder for the record's one image: the
    // sample passed the loader and then stopped the whole run at the model's splice ("more <image> runs than its 1
    // image(s)"). Without a prompt the caption is encoded as plain text, "<image>" included.
    if (caption.includes(IMAGE_TOKEN)) {
      throw new SampleError(`the caption holds "${IMAGE_TOKEN}", which after the caption prompt would be a second image placeholder for its one image`);
    }
    return tokenizeConversation(`${o.captionPrompt}${caption}`, tok, o);
  }
  const L = o.maxLength, M = o.mediaTokenLength, media = o.mediaTokenId ?? -1;
  const bos = tok.bos > 0 ? [tok.bos] : [];
  const head = [...bos, ...new Array<number>(M).fill(media)];
  if (head.length + 1 > L + 1) throw new SampleError(`max_length ${L} cannot hold BOS, ${M} image ids and EOS`);
  let text = tok.encode(caption);
  const room = L - head.length;
  const full = head.length + text.length + 1;
  if (text.length > room) text = text.slice(0, room);
  const ids = [...head, ...text, tok.eos];
  const labels = [...head.map(() => 0), ...text.map(() => 1), 1];
  return finish(ids, labels, false, o, 1, full, tok.pad);
}
