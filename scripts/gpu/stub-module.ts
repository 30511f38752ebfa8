// Stands in for sharp, vega and vega-lite in scripts/gpu bundles that reach the trainer (build-bundle.sh aliases them
// here): the GPU machine runs no plots and decodes no image files, and those packages (a native binary, megabytes of
// JavaScript) would neither load there nor fit the bundle. Anything that calls them fails with this message.
function missing(): never {
  throw new Error('not in the GPU bundle: plots and image decoding run on the development machine');
}
export default missing;
export const compile = missing;
export const parse = missing;
export class View { constructor() { missing(); } }
