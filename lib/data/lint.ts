// `owlet lint-data`: checks data files before a run spends GPU time on them. Counts samples, images and tokens, and
// reports what would go wrong in training: samples with no counted token after truncation (the official loss divides
// by zero: NaN), `<image>` placeholders that do not match the image list, missing or unreadable images, over-long
// samples, malformed lines.
import sharp from 'sharp';
import { readJsonl, type DataProblem, type DataSource } from './dataset.ts';
import { tokenizeCaption, tokenizeConversation, type TokenizedSample } from './conversation.ts';
import { llamaTokenizer, type Tokenizer } from './tokenizer.ts';
import { decodeImage, MAX_IMAGE_PIXELS } from './image.ts';
import { ImageError, SampleError } from './errors.ts';
import { AI_MARKER, countImageTokens, countMediaRuns } from './template.ts';

export type LintKind =
  | 'format' // a line that is not a valid record
  | 'no-labels' // no token counts in the loss (NaN loss in the official code)
  | 'too-many-placeholders' // more <image> than images: the model would run out of images
  | 'unused-images' // fewer <image> than images: the extra images are encoded but never used
  | 'merged-images' // <image><image> with no text between: one run of media ids, the model sees the first image only
  | 'missing-image'
  | 'unreadable-image'
  | 'over-long' // cut at max_length
  | 'sample-error'; // refused outright (e.g. the text before the first marker exceeds max_length+1)

/** Errors make a sample unusable (the loader skips it); warnings are legal but probably not intended. */
export const LINT_ERRORS: ReadonlySet<LintKind> = new Set(['format', 'too-many-placeholders', 'missing-image', 'unreadable-image', 'sample-error']);

export interface LintIssue { kind: LintKind; id: string; message: string }

export interface LintFileSummary {
  path: string;
  samples: number;
  instructions: number;
  captions: number;
  textOnly: number;
  /** Image references (a path used twice counts twice). */
  images: number;
  /** Ids after truncation (BOS, text, media positions, EOS), summed. */
  tokens: number;
  /** Ids without the max_length limit, summed. */
  untruncatedTokens: number;
  /** Targets counted in the loss, summed. */
  labelTokens: number;
  longest: number;
}

export interface LintReport {
  maxLength: number;
  mediaTokenLength: number;
  files: LintFileSummary[];
  totals: Omit<LintFileSummary, 'path' | 'longest'> & { longest: number; uniqueImages: number; errors: number; warnings: number };
  counts: Record<LintKind, number>;
  /** Every issue found (the first `maxIssues`). */
  issues: LintIssue[];
  /** True when nothing of kind error was found. */
  ok: boolean;
}

export interface LintOptions {
  tokenizer?: Tokenizer;
  /** L (default 2048, the official --seq-length). */
  maxLength?: number;
  /** Ids per image (default 65). */
  mediaTokenLength?: number;
  /** 'decode' (default): fully decode each distinct image; 'header': read its header only; 'none': skip. */
  images?: 'decode' | 'header' | 'none';
  /** Issues kept in the report (default 10000; counts are always complete). */
  maxIssues?: number;
  /** Images checked concurrently (default 8). */
  concurrency?: number;
}

const KINDS: LintKind[] = ['format', 'no-labels', 'too-many-placeholders', 'unused-images', 'merged-images', 'missing-image', 'unreadable-image', 'over-long', 'sample-error'];

async function checkImage(path: string, how: 'decode' | 'header'): Promise<LintIssue | null> {
  try {
    if (how === 'decode') await decodeImage(path);
    else {
      const m = await sharp(path).metadata().catch((e: Error) => {
        throw new ImageError(path, /missing|no such file/i.test(e.message) ? 'file not found' : `cannot decode (${e.message})`);
      });
      if (!m.width || !m.height) throw new ImageError(path, 'no image size in the header');
      // (what decodeImage refuses: the header check passed images the loader then skipped)
      if (m.width * m.height > MAX_IMAGE_PIXELS) {
        throw new ImageError(path, `too large (${m.width}×${m.height} pixels, more than ${MAX_IMAGE_PIXELS.toLocaleString('en-US')})`);
      }
    }
    return null;
  } catch (e) {
    if (!(e instanceof ImageError)) throw e;
    return { kind: /file not found/.test(e.message) ? 'missing-image' : 'unreadable-image', id: path, message: e.message };
  }
}

/** `owlet lint-data`: checks instruction-data JSONL files (fields, `<image>` counts against the images, the images
 *  themselves, lengths in tokens) and reports the problems found; formatLintReport writes the report as text. */
export async function lintData(files: readonly (string | DataSource)[], o: LintOptions = {}): Promise<LintReport> {
  const tok = o.tokenizer ?? llamaTokenizer();
  const seq = { maxLength: o.maxLength ?? 2048, mediaTokenLength: o.mediaTokenLength ?? 65 };
  const maxIssues = o.maxIssues ?? 10000;
  const counts = Object.fromEntries(KINDS.map((k) => [k, 0])) as Record<LintKind, number>;
  const issues: LintIssue[] = [];
  const add = (i: LintIssue): void => { counts[i.kind]++; if (issues.length < maxIssues) issues.push(i); };
  const imageUsers = new Map<string, string>(); // image path → first sample using it
  const summaries: LintFileSummary[] = [];

  for (const f of files) {
    const path = typeof f === 'string' ? f : f.path;
    const s: LintFileSummary = { path, samples: 0, instructions: 0, captions: 0, textOnly: 0, images: 0, tokens: 0, untruncatedTokens: 0, labelTokens: 0, longest: 0 };
    const problems: DataProblem[] = [];
    let records;
    try { records = readJsonl(f, { onError: 'skip' }, problems); } catch (e) {
      add({ kind: 'format', id: path, message: (e as Error).message });
      summaries.push(s);
      continue;
    }
    for (const p of problems) add({ kind: 'format', id: p.id, message: p.message });
    for (const rec of records) {
      s.samples++;
      s.images += rec.images.length;
      if (rec.kind === 'caption') s.captions++; else if (rec.images.length) s.instructions++; else s.textOnly++;
      for (const img of rec.images) if (!imageUsers.has(img)) imageUsers.set(img, rec.id);
      if (rec.kind === 'instruction') {
        const placeholders = countImageTokens(rec.text);
        if (placeholders > rec.images.length) {
          add({ kind: 'too-many-placeholders', id: rec.id, message: `${rec.id}: ${placeholders} <image> placeholders but ${rec.images.length} images` });
        } else if (placeholders < rec.images.length) {
          add({ kind: 'unused-images', id: rec.id, message: `${rec.id}: ${rec.images.length} images but ${placeholders} <image> placeholders (extra images are encoded, never used)` });
        }
      }
      let t: TokenizedSample;
      try {
        t = rec.kind === 'caption' ? tokenizeCaption(rec.text, tok, seq) : tokenizeConversation(rec.text, tok, seq);
      } catch (e) {
        if (!(e instanceof SampleError)) throw e;
        add({ kind: 'sample-error', id: rec.id, message: `${rec.id}: ${e.message}` });
        continue;
      }
      s.tokens += t.seqLength;
      s.untruncatedTokens += t.fullLength;
      s.labelTokens += t.labelCount;
      s.longest = Math.max(s.longest, t.fullLength);
      // Legal (the official code trains on it) but surely not meant: the images after the first of a merged run get no
      // place in the sequence, and their 65 positions hold the placeholder id's embedding (spec §1.5).
      const runs = countMediaRuns(t.inputIds, t.inputIds.length - 1); // (training searches ids[:-1])
      if (runs < t.mediaRuns) {
        add({ kind: 'merged-images', id: rec.id, message: `${rec.id}: ${t.mediaRuns} <image> placeholders form ${runs} image run(s): with no text between them they merge, and the model sees only the first image of each run` });
      }
      if (t.truncated) {
        add({ kind: 'over-long', id: rec.id, message: `${rec.id}: ${t.fullLength} ids, cut to max_length+1 = ${seq.maxLength + 1}` });
      }
      if (t.labelCount === 0) {
        const why = rec.kind === 'instruction' && !rec.text.includes(AI_MARKER) ? 'it has no "AI: " response' : 'every response was truncated away';
        add({ kind: 'no-labels', id: rec.id, message: `${rec.id}: no token counts in the loss (${why}); the official loss is NaN on it` });
      }
    }
    summaries.push(s);
  }

  if ((o.images ?? 'decode') !== 'none') {
    const how = o.images === 'header' ? 'header' : 'decode';
    const paths = [...imageUsers.keys()];
    const width = Math.max(1, o.concurrency ?? 8);
    for (let i = 0; i < paths.length; i += width) {
      const found = await Promise.all(paths.slice(i, i + width).map((p) => checkImage(p, how)));
      for (const issue of found) if (issue) add({ ...issue, message: `${issue.message} (first used by ${imageUsers.get(issue.id)})` });
    }
  }

  const sum = (k: keyof Omit<LintFileSummary, 'path' | 'longest'>) => summaries.reduce((a, s) => a + s[k], 0);
  const errors = KINDS.filter((k) => LINT_ERRORS.has(k)).reduce((a, k) => a + counts[k], 0);
  const warnings = KINDS.filter((k) => !LINT_ERRORS.has(k)).reduce((a, k) => a + counts[k], 0);
  return {
    ...seq,
    files: summaries,
    totals: {
      samples: sum('samples'), instructions: sum('instructions'), captions: sum('captions'), textOnly: sum('textOnly'),
      images: sum('images'), tokens: sum('tokens'), untruncatedTokens: sum('untruncatedTokens'), labelTokens: sum('labelTokens'),
      longest: Math.max(0, ...summaries.map((s) => s.longest)), uniqueImages: imageUsers.size, errors, warnings,
    },
    counts, issues, ok: errors === 0,
  };
}

const LABEL: Record<LintKind, string> = {
  'format': 'malformed lines',
  'no-labels': 'samples with no counted token (NaN loss)',
  'too-many-placeholders': 'samples with more <image> than images',
  'unused-images': 'samples with more images than <image>',
  'merged-images': 'samples with <image> placeholders merged into one image (no text between them)',
  'missing-image': 'missing images',
  'unreadable-image': 'unreadable images',
  'over-long': `samples cut at max_length`,
  'sample-error': 'samples refused (too long before the first marker)',
};

/** A human-readable report: per-file counts, totals, issue counts, then up to `maxLines` issues. */
export function formatLintReport(r: LintReport, maxLines = 50): string {
  const n = (x: number) => x.toLocaleString('en-US');
  const lines: string[] = [];
  lines.push(`max_length ${r.maxLength}, ${r.mediaTokenLength} ids per image`);
  for (const f of [...r.files, { path: 'total', ...r.totals }]) {
    lines.push(`${f.path}: ${n(f.samples)} samples (${n(f.instructions)} multimodal, ${n(f.textOnly)} text-only, ${n(f.captions)} captions), ` +
      `${n(f.images)} images, ${n(f.tokens)} tokens (${n(f.untruncatedTokens)} before truncation), ${n(f.labelTokens)} counted in the loss, longest ${n(f.longest)}`);
  }
  lines.push(`distinct images: ${n(r.totals.uniqueImages)}`);
  for (const k of KINDS) if (r.counts[k]) lines.push(`${LINT_ERRORS.has(k) ? 'error' : 'warning'}: ${n(r.counts[k])} ${LABEL[k]}`);
  for (const i of r.issues.slice(0, maxLines)) lines.push(`  [${i.kind}] ${i.message}`);
  if (r.issues.length > maxLines) lines.push(`  … ${n(r.issues.length - maxLines)} more`);
  lines.push(r.ok ? `OK: no errors, ${n(r.totals.warnings)} warnings` : `FAILED: ${n(r.totals.errors)} errors, ${n(r.totals.warnings)} warnings`);
  return lines.join('\n');
}
