export * from './tensor.ts';
export * from './errors.ts';
export { scope, keep } from './scope.ts';
export { backward, noGrad, enableGrad, isGradEnabled, needsGrad, record, clearTape, tapeLength } from './autograd.ts';
export * from './ops/elementwise.ts';
export * from './ops/matmul.ts';
export * from './ops/layout.ts';
export * from './ops/attention.ts';
