export * from './generate.ts';
export * from './sample.ts';
export * from './prompt.ts';
export * from './kvcache.ts';
export * from './owleval.ts';
