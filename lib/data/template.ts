// The mPLUG-Owl conversation template (spec §5.1). Training texts and inference prompts are built here so that the
// markers the tokenisation splits on ("AI: ", "\nHuman: ", "<image>") are written in exactly one place.

export const SYSTEM_PROMPT =
  "The following is a conversation between a curious human and AI assistant. The assistant gives helpful, detailed, and polite answers to the user's questions.";
export const IMAGE_TOKEN = '<image>';
/** The two markers `_extract_text_token_from_conversation` splits on (with the trailing space and leading newline). */
export const AI_MARKER = 'AI: ';
export const HUMAN_MARKER = '\nHuman: ';

export interface Turn { human: string; ai: string }

export interface ConversationSpec {
  /** Number of images; each becomes its own `Human: <image>` line before the first question. */
  images?: number;
  turns: readonly Turn[];
  system?: string;
}

/** A training text: system line, one `Human: <image>` line per image, then `Human: q` / `AI: a` turns. */
export function formatConversation(c: ConversationSpec): string {
  let s = c.system ?? SYSTEM_PROMPT;
  for (let i = 0; i < (c.images ?? 0); i++) s += `${HUMAN_MARKER}${IMAGE_TOKEN}`;
  for (const t of c.turns) s += `${HUMAN_MARKER}${t.human}\n${AI_MARKER}${t.ai}`;
  return s;
}

/** An inference prompt: the same layout, ending with `AI: ` (trailing space) so generation continues the answer. */
export function formatPrompt(question: string, o: { images?: number; history?: readonly Turn[]; system?: string } = {}): string {
  return `${formatConversation({ images: o.images, turns: o.history ?? [], system: o.system })}${HUMAN_MARKER}${question}\n${AI_MARKER}`;
}

/** A stage-1 caption prompt in this template: the image, a question, and `AI: ` that the caption answers
 *  (data.caption_prompt; the official stage-1 prompt is unknown, spec §4.2). The question keeps the image directly
 *  before "\nHuman: ", so text written in the image's place tokenises into the same positions. */
export function captionPrompt(system: string = SYSTEM_PROMPT, question = 'What is in the image?'): string {
  return formatPrompt(question, { images: 1, system });
}

/** Number of `<image>` placeholders in a text. */
export function countImageTokens(text: string): number {
  return text.split(IMAGE_TOKEN).length - 1;
}

/**
 * Image runs in encoded ids as the model's splice finds them (lib/model/batch.ts's splicePlan): a run starts at a
 * negative id unlike the one before it, searched over the first `searchLen` ids (training searches ids[:-1]).
 * Placeholders with no text between them ("<image><image>") make one run: the model sees the first image only.
 */
export function countMediaRuns(ids: ArrayLike<number>, searchLen = ids.length): number {
  let runs = 0;
  for (let i = 0; i < searchLen; i++) if (ids[i] < 0 && (i === 0 || ids[i - 1] !== ids[i])) runs++;
  return runs;
}
