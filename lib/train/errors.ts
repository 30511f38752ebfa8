// Errors of the training layer. ConfigError and UsageError are the user's to fix (the CLI exits with 2); the others
// are failures of a run (exit 1).
import { OwletError } from '../tensor/errors.ts';

export class ConfigError extends OwletError { constructor(m: string) { super(m, 'OWLET_CONFIG'); } }
export class UsageError extends OwletError { constructor(m: string) { super(m, 'OWLET_USAGE'); } }
/** A piece of owlet this build does not have yet (e.g. a command whose module has not landed). */
export class NotAvailableError extends OwletError { constructor(m: string) { super(m, 'OWLET_NOT_AVAILABLE'); } }
/** Too many non-finite steps, or another condition that stops a run. */
export class TrainingError extends OwletError { constructor(m: string) { super(m, 'OWLET_TRAINING'); } }
export class CheckpointError extends OwletError { constructor(m: string) { super(m, 'OWLET_CHECKPOINT'); } }
