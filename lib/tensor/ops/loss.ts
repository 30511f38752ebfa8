// Cross-entropy: one native call computes the mean loss and its gradient together; backward only scales that saved
// gradient in place by the incoming one, on the device (no read-back of the loss, no new logits-sized tensor).
import { needsGrad, record } from '../autograd.ts';
import { Tensor, sameBackend } from '../tensor.ts';
import { wrap } from './util.ts';

/**
 * Mean cross-entropy of `logits` [..., V] (f32) against `labels` (i32, logits' leading shape) over the rows whose
 * label is not `ignoreIndex`; a one-element f32 tensor [1]. A batch with no counted row gives 0 and a zero gradient
 * (the official code gives NaN); a label outside [0, V) that is not ignoreIndex throws an ArgumentError.
 */
export function crossEntropy(logits: Tensor, labels: Tensor, ignoreIndex = -100): Tensor {
  const be = sameBackend('crossEntropy', logits, labels);
  const [lossH, dH] = be.crossEntropy(logits.handle, labels.handle, ignoreIndex);
  const loss = wrap(be, lossH);
  const dlogits = wrap(be, dH);
  if (needsGrad(logits)) {
    record('crossEntropy', [logits], [loss], [dlogits], ([g], [d]) => {
      // The saved gradient is this node's alone and released after backward: scale it in place by the incoming
      // one-element gradient (read on the device) and hand its storage on, so backward allocates nothing.
      be.mulScalarInplace(d.handle, g!.handle);
      return [d.share()];
    });
  }
  dlogits.dispose(); // the tape keeps its own handle when it needs one
  return loss;
}

/**
 * i32 [rows]: the index of the largest value of each row of x [..., V] (the first on ties; NaN never wins). No
 * gradient. Next-token accuracy reads these few ids instead of the whole logits.
 */
export function argmaxRows(x: Tensor): Tensor {
  return wrap(x.backend, x.backend.argmaxRows(x.handle));
}
