// Preloaded into every process of a launch test (NODE_OPTIONS=--import): rank 1 dies of an uncaught exception, as a
// rank does on a bug outside owlet's error handling (a worker thread's or a stream's error event), whose Node.js
// crash report ends with the Node version line.
if (process.env.RANK === '1') setImmediate(() => { throw new TypeError('injected crash of rank 1'); });
