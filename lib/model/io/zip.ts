// A minimal zip reader for torch.save archives: the central directory (with ZIP64, which a 14 GB pytorch_model.bin
// needs), stored entries read in place with positional reads, deflated entries inflated whole (torch never writes
// those, but a re-zipped file might). No extraction to disk, no paths interpreted.
import { closeSync, fstatSync } from 'node:fs';
import { crc32, inflateRawSync } from 'node:zlib';
import { openRegularFile, readExact } from './bytes.ts';
import { CheckpointError } from './errors.ts';

export interface ZipEntry {
  name: string;
  method: number; // 0 stored, 8 deflate
  compressedSize: number;
  size: number;
  localHeaderOffset: number;
  crc: number;
}

const SIG_EOCD = 0x06054b50, SIG_EOCD64 = 0x06064b50, SIG_LOC64 = 0x07064b50, SIG_CEN = 0x02014b50, SIG_LOC = 0x04034b50;
const U32_MAX = 0xffffffff, U16_MAX = 0xffff;

export class ZipFile {
  readonly path: string;
  readonly entries = new Map<string, ZipEntry>();
  private fd: number | null;
  private readonly size: number;
  private dataStart = new Map<string, number>();
  private inflated: { name: string; bytes: Uint8Array } | null = null;

  private constructor(path: string, fd: number) {
    this.path = path;
    this.fd = fd;
    this.size = fstatSync(fd).size;
  }

  static open(path: string): ZipFile {
    const z = new ZipFile(path, openRegularFile(path));
    try {
      z.readDirectory();
    } catch (e) {
      z.close();
      throw e;
    }
    return z;
  }

  private fail(msg: string, tensor?: string): never { throw new CheckpointError(msg, { file: this.path, tensor }); }

  private read(pos: number, len: number): DataView {
    if (pos < 0 || pos + len > this.size) this.fail(`zip structure points at bytes ${pos}..${pos + len} beyond the end of the file (${this.size} bytes): truncated`);
    const b = new Uint8Array(len);
    readExact(this.fd!, b, pos, { file: this.path });
    return new DataView(b.buffer);
  }

  private readDirectory(): void {
    if (this.size < 22) this.fail(`${this.size} bytes is too short for a zip archive`);
    const tailLen = Math.min(this.size, 22 + U16_MAX);
    const tail = this.read(this.size - tailLen, tailLen);
    let eocd = -1;
    for (let i = tailLen - 22; i >= 0; i--) if (tail.getUint32(i, true) === SIG_EOCD) { eocd = i; break; }
    if (eocd < 0) this.fail('no zip end-of-central-directory record: not a zip archive, or truncated');
    let count = tail.getUint16(eocd + 10, true);
    let cdSize = tail.getUint32(eocd + 12, true);
    let cdOffset = tail.getUint32(eocd + 16, true);
    // ZIP64: a locator just before the classic record points at the 64-bit record. Required when a classic field
    // saturates; preferred whenever present (some writers fill both).
    const locPos = this.size - tailLen + eocd - 20;
    const loc = locPos >= 0 ? this.read(locPos, 20) : null;
    if (loc && loc.getUint32(0, true) === SIG_LOC64) {
      const rec = this.read(num(loc.getBigUint64(8, true)), 56);
      if (rec.getUint32(0, true) !== SIG_EOCD64) this.fail('ZIP64 locator does not point at a ZIP64 end record');
      count = num(rec.getBigUint64(32, true));
      cdSize = num(rec.getBigUint64(40, true));
      cdOffset = num(rec.getBigUint64(48, true));
    } else if (count === U16_MAX || cdSize === U32_MAX || cdOffset === U32_MAX) {
      this.fail('ZIP64 archive without a ZIP64 locator');
    }
    const cd = this.read(cdOffset, cdSize);
    let p = 0;
    const dec = new TextDecoder();
    for (let i = 0; i < count; i++) {
      if (p + 46 > cdSize || cd.getUint32(p, true) !== SIG_CEN) this.fail(`central directory entry ${i} is corrupt`);
      const crc = cd.getUint32(p + 16, true);
      const flags = cd.getUint16(p + 8, true);
      const method = cd.getUint16(p + 10, true);
      let compressedSize = cd.getUint32(p + 20, true);
      let size = cd.getUint32(p + 24, true);
      const nameLen = cd.getUint16(p + 28, true), extraLen = cd.getUint16(p + 30, true), commentLen = cd.getUint16(p + 32, true);
      let localHeaderOffset = cd.getUint32(p + 42, true);
      if (p + 46 + nameLen + extraLen + commentLen > cdSize) this.fail(`central directory entry ${i} runs past the directory`);
      const name = dec.decode(new Uint8Array(cd.buffer, p + 46, nameLen));
      // ZIP64 extra field: the 64-bit values, in this order, for exactly the fields that hold 0xFFFFFFFF.
      let e = p + 46 + nameLen;
      const eEnd = e + extraLen;
      while (e + 4 <= eEnd) {
        const id = cd.getUint16(e, true), len = cd.getUint16(e + 2, true);
        if (e + 4 + len > eEnd) this.fail(`entry ${name}: its extra field runs past its end`);
        if (id === 0x0001) {
          let q = e + 4;
          const next = () => {
            if (q + 8 > e + 4 + len) this.fail(`entry ${name}: its ZIP64 field is too short`);
            const v = num(cd.getBigUint64(q, true));
            q += 8;
            return v;
          };
          if (size === U32_MAX) size = next();
          if (compressedSize === U32_MAX) compressedSize = next();
          if (localHeaderOffset === U32_MAX) localHeaderOffset = next();
        }
        e += 4 + len;
      }
      if (flags & 1) this.fail(`entry ${name} is encrypted`);
      // Sizes the rest trusts: a stored entry is exactly its bytes (a larger size read the next headers as data), and
      // a deflated one cannot expand more than deflate can (~1032:1), so its size bounds the allocation honestly.
      if (method === 0 && compressedSize !== size) this.fail(`stored entry ${name} says ${size} bytes but holds ${compressedSize}`);
      if (method === 8 && size > compressedSize * 1100 + 1024) this.fail(`entry ${name} says it inflates to ${size} bytes from ${compressedSize}`);
      if (this.entries.has(name)) this.fail(`the archive holds two entries named ${name}`);
      this.entries.set(name, { name, method, compressedSize, size, localHeaderOffset, crc });
      p += 46 + nameLen + extraLen + commentLen;
    }
  }

  /** Absolute offset of an entry's data (after its local header, whose extra field torch uses for 64-byte alignment). */
  private startOf(e: ZipEntry): number {
    let s = this.dataStart.get(e.name);
    if (s === undefined) {
      const h = this.read(e.localHeaderOffset, 30);
      if (h.getUint32(0, true) !== SIG_LOC) this.fail(`local header of ${e.name} is corrupt`);
      s = e.localHeaderOffset + 30 + h.getUint16(26, true) + h.getUint16(28, true);
      if (s + e.compressedSize > this.size) {
        this.fail(`entry ${e.name} (${e.compressedSize} bytes at ${s}) runs past the end of the file (${this.size} bytes): truncated`);
      }
      this.dataStart.set(e.name, s);
    }
    return s;
  }

  entry(name: string): ZipEntry {
    const e = this.entries.get(name);
    if (!e) this.fail(`archive has no entry ${name}`);
    return e;
  }

  /** Fills `dst` with bytes [offset, offset + dst.length) of entry `name`'s uncompressed contents. */
  readRange(name: string, offset: number, dst: Uint8Array, tensor?: string): void {
    const e = this.entry(name);
    if (offset < 0 || offset + dst.byteLength > e.size) {
      this.fail(`needs bytes ${offset}..${offset + dst.byteLength} of ${name}, which holds ${e.size}`, tensor);
    }
    if (this.fd === null) this.fail('archive was already closed', tensor);
    if (e.method === 0) {
      readExact(this.fd, dst, this.startOf(e) + offset, { file: this.path, tensor });
      // (a whole entry, as each tensor's storage usually is, is checked against its CRC-32 as zip readers do)
      if (offset === 0 && dst.byteLength === e.size) this.checkCrc(e, dst, tensor);
      return;
    }
    dst.set(this.inflate(e, tensor).subarray(offset, offset + dst.byteLength));
  }

  /** The whole uncompressed contents of an entry. */
  readAll(name: string): Uint8Array {
    const e = this.entry(name);
    const out = new Uint8Array(e.size);
    this.readRange(name, 0, out);
    return out;
  }

  private inflate(e: ZipEntry, tensor?: string): Uint8Array {
    if (this.inflated?.name === e.name) return this.inflated.bytes;
    if (e.method !== 8) this.fail(`entry ${e.name} uses zip compression method ${e.method}; only stored (0) and deflate (8) are supported`, tensor);
    const raw = new Uint8Array(e.compressedSize);
    readExact(this.fd!, raw, this.startOf(e), { file: this.path, tensor });
    let bytes: Uint8Array;
    try {
      bytes = inflateRawSync(raw, { maxOutputLength: Math.max(1, e.size) }); // (no bomb: never past the declared size)
    } catch (err) {
      this.fail(`entry ${e.name} does not inflate to its ${e.size} bytes: ${(err as Error).message}`, tensor);
    }
    if (bytes.byteLength !== e.size) this.fail(`entry ${e.name} inflates to ${bytes.byteLength} bytes, not ${e.size}`, tensor);
    this.checkCrc(e, bytes, tensor);
    this.inflated = { name: e.name, bytes };
    return bytes;
  }

  private checkCrc(e: ZipEntry, bytes: Uint8Array, tensor?: string): void {
    const c = crc32(bytes) >>> 0;
    if (c !== e.crc) this.fail(`entry ${e.name} fails its CRC-32 check (0x${c.toString(16)}, the directory says 0x${e.crc.toString(16)}): corrupt`, tensor);
  }

  close(): void {
    if (this.fd !== null) closeSync(this.fd);
    this.fd = null;
    this.inflated = null;
  }
}

function num(v: bigint): number {
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new CheckpointError(`zip offset ${v} is beyond 2^53`);
  return Number(v);
}
