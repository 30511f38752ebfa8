// lib/data: tokenizer, conversation template, sample construction, images, datasets, loader, demo data, lint.
export * from './errors.ts';
export {
  type Tokenizer, type EncodeOptions, llamaTokenizer, loadTokenizer, loadTokenizerJson, loadTokenizerModel,
} from './tokenizer.ts';
export { llamaVocab, llamaTokenizerJson, llamaTokenizerConfig, llamaModelProto, LLAMA_BOS, LLAMA_EOS, LLAMA_UNK } from './llama-vocab.ts';
export { parseModelProto, writeModelProto, PieceType, ModelType, type SpModelProto, type SpPiece } from './sentencepiece-proto.ts';
export { SentencePieceBpe } from './sentencepiece.ts';
export * from './template.ts';
export { tokenizeConversation, tokenizeCaption, captionPromptProblem, untruncatedLength, SPLIT_TEXT, SPLIT_MEDIA, type SequenceOptions, type TokenizedSample } from './conversation.ts';
export {
  CLIP_MEAN, CLIP_STD, decodeImage, preprocessImage, randomResizedCropParams, resizeRgb, normalizeToChw,
  type ImageSource, type RgbImage, type CropBox, type AugmentOptions, type PreprocessOptions,
} from './image.ts';
export { rng, hashInts, permutation, type Rng } from './rng.ts';
export {
  JsonlDataset, ShardStream, readJsonl, describeProblems, type DataSource, type DataRecord, type DataProblem, type RecordFormat, type LoadOptions,
  type ShardOptions, type StreamSlot,
} from './dataset.ts';
export {
  collate, lossTargets, toTensors, batchToRecord, batchFromRecord, type Batch, type BatchTensors, type PreparedSample,
  type StTensor, type StDType,
} from './batch.ts';
export { DataLoader, prepareSample, globalStreamPosition, rebasedPosition, type LoaderOptions, type LoaderPosition, type LoaderStats, type SampleOptions } from './loader.ts';
export { generateDemoData, type DemoOptions, type DemoFiles } from './demo.ts';
export {
  SHAPES, COLORS, COLOR_RGB, sampleScene, rasterize, caption, gridText, gridCode, GRID_TOKENS, GRID_STYLES, type GridStyle, DEFAULT_LAYOUT, questionPool, sampleTurns,
  arithmeticPairs, type Scene, type SceneLayout, type PlacedShape, type QA, type ShapeName, type ColorName,
} from './demo-scene.ts';
export { lintData, formatLintReport, LINT_ERRORS, type LintReport, type LintIssue, type LintKind, type LintOptions, type LintFileSummary } from './lint.ts';
