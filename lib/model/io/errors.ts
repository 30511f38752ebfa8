// One error type for everything that reads or writes checkpoints: it always says which FILE and, where one is
// involved, which TENSOR, so a broken 14 GB download is diagnosed from the message alone.
import { OwletError } from '../../tensor/errors.ts';

export class CheckpointError extends OwletError {
  readonly file: string | undefined;
  readonly tensor: string | undefined;
  constructor(message: string, where: { file?: string; tensor?: string } = {}) {
    const parts = [where.file ? `${where.file}` : '', where.tensor ? `tensor '${where.tensor}'` : ''].filter(Boolean);
    super(parts.length ? `${parts.join(': ')}: ${message}` : message, 'OWLET_CHECKPOINT', 'checkpoint');
    this.file = where.file;
    this.tensor = where.tensor;
  }
}

/** Config files (config.json, adapter_config.json) that are missing, malformed or inconsistent. */
export class ConfigError extends OwletError {
  readonly file: string | undefined;
  constructor(message: string, file?: string) {
    super(file ? `${file}: ${message}` : message, 'OWLET_CONFIG', 'config');
    this.file = file;
  }
}
