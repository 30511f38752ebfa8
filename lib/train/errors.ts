// Errors of the training layer. ConfigError and UsageError are the user's to fix (the CLI exits with 2); the others
// are failures of a run (exit 1).
import { OwletError } from '../tensor/errors.ts';

// (one ConfigError and one CheckpointError in all of owlet: the model's files throw the same classes, so that
// `instanceof` on the ones exported from 'owlet' catches both — the library audit found two of each)
export { CheckpointError, ConfigError } from '../model/io/errors.ts';
export class UsageError extends OwletError { constructor(m: string) { super(m, 'OWLET_USAGE'); } }
/** A piece of owlet this build does not have yet (e.g. a command whose module has not landed). */
export class NotAvailableError extends OwletError { constructor(m: string) { super(m, 'OWLET_NOT_AVAILABLE'); } }
/** Too many non-finite steps, or another condition that stops a run. */
export class TrainingError extends OwletError { constructor(m: string) { super(m, 'OWLET_TRAINING'); } }
