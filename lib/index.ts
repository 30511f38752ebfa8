// owlet's programmatic API: everything the CLI does, as typed functions and classes.
export * from './tensor/index.ts';
export { cpu, cuda, cudaAvailable, backendFor, type NativeBackend, type NativeTensor, type DTypeName } from './native.ts';
export * from './model/index.ts';
export * as data from './data/index.ts';
export {
  generateDemoData, llamaTokenizer, loadTokenizer, DataLoader, JsonlDataset, preprocessImage, formatPrompt, lintData,
  DataFormatError, ImageError, SampleError, TokenizerError, type Tokenizer, type Batch,
  // (the options and results of the functions above, so that a TypeScript caller can name them; the demo data's
  // options are DemoDataOptions here, DemoOptions being runDemo's)
  type EncodeOptions, type LoaderOptions, type LoaderPosition, type LoaderStats, type LoadOptions as DatasetLoadOptions,
  type DataSource, type DataRecord, type ImageSource, type PreprocessOptions, type LintOptions, type LintReport,
  type LintIssue, type DemoOptions as DemoDataOptions, type DemoFiles,
} from './data/index.ts';
export { probeCuda, resolveDevice } from './train/device.ts';
export { opProfile, opProfileAvailable, resetOpProfile, setOpProfiling, deviceTimeline, type OpStat } from './op-profile.ts';
export * from './train/index.ts';
export * from './generate/index.ts';
export { runDemo, DEMO_SYSTEM, type DemoOptions, type DemoReport } from './demo/index.ts';
export { main as cli } from './cli/main.ts';
export {
  initProcessGroup, currentProcessGroup, allReduceMean, broadcast, barrier, launch, readDistEnv, LaunchError,
  type ProcessGroup, type LaunchOptions, type DistEnv, type InitOptions as ProcessGroupOptions,
} from './dist/index.ts';
