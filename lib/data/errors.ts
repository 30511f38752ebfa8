// Typed errors of the data pipeline. Each names the file (and line) it is about, so a user can find the bad sample.
import { OwletError } from '../tensor/errors.ts';

/** A malformed data file or record (bad JSON, missing field, wrong type). */
export class DataFormatError extends OwletError {
  readonly file: string | undefined;
  readonly line: number | undefined;
  constructor(message: string, file?: string, line?: number) {
    super(file ? `${file}${line !== undefined ? `:${line}` : ''}: ${message}` : message, 'OWLET_DATA_FORMAT', 'data');
    this.file = file;
    this.line = line;
  }
}

/** An image that is missing, unreadable or not decodable. */
export class ImageError extends OwletError {
  readonly file: string;
  constructor(file: string, reason: string) {
    super(`image ${file}: ${reason}`, 'OWLET_IMAGE', 'image');
    this.file = file;
  }
}

/** A sample that cannot become a training sequence (too long, more `<image>` placeholders than images, …). */
export class SampleError extends OwletError {
  constructor(message: string) { super(message, 'OWLET_SAMPLE', 'sample'); }
}

/** A tokenizer file that cannot be loaded or uses a feature owlet does not implement. */
export class TokenizerError extends OwletError {
  constructor(message: string) { super(message, 'OWLET_TOKENIZER', 'tokenizer'); }
}
