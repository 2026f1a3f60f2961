/**
 * Minimal ambient types for parquetjs-lite 0.8.7 (the package ships none).
 * Only the surface Squeeze uses is declared; see node_modules/parquetjs-lite/lib.
 */
declare module 'parquetjs-lite' {
  import type { Writable } from 'node:stream';

  export type ParquetCompression = 'UNCOMPRESSED' | 'GZIP' | 'SNAPPY';

  /** One field of a schema definition (parquetjs-lite's JSON schema format). */
  export interface ParquetFieldDefinition {
    /** Primitive/logical type for leaves ('UTF8', 'INT32', ...); 'LIST' or 'MAP' on groups sets the converted type. */
    type?: string;
    optional?: boolean;
    repeated?: boolean;
    encoding?: 'PLAIN' | 'RLE';
    compression?: ParquetCompression;
    /** false disables min/max/null-count statistics for this column. */
    statistics?: boolean;
    typeLength?: number;
    fields?: ParquetSchemaDefinition;
  }

  export interface ParquetSchemaDefinition {
    [name: string]: ParquetFieldDefinition;
  }

  export class ParquetSchema {
    constructor(definition: ParquetSchemaDefinition);
    readonly schema: ParquetSchemaDefinition;
  }

  export interface ParquetWriterOptions {
    /** rows buffered per row group (default 4096) */
    rowGroupSize?: number;
    /** rows per data page (default 8192) */
    pageSize?: number;
    /** default true */
    useDataPageV2?: boolean;
    /** false skips writing ColumnIndex/OffsetIndex */
    pageIndex?: boolean;
  }

  export class ParquetWriter {
    static openFile(schema: ParquetSchema, path: string, opts?: ParquetWriterOptions): Promise<ParquetWriter>;
    static openStream(schema: ParquetSchema, stream: Writable, opts?: ParquetWriterOptions): Promise<ParquetWriter>;
    appendRow(row: Record<string, unknown>): Promise<void>;
    close(): Promise<void>;
    setMetadata(key: string, value: string): void;
    setRowGroupSize(rows: number): void;
  }

  export interface ParquetCursor {
    next(): Promise<Record<string, unknown> | null>;
    rewind(): void;
  }

  export class ParquetReader {
    static openFile(path: string): Promise<ParquetReader>;
    static openBuffer(buffer: Buffer): Promise<ParquetReader>;
    getCursor(columns?: Array<string | string[]>): ParquetCursor;
    getRowCount(): unknown;
    getSchema(): ParquetSchema & { fields: Record<string, unknown> };
    getMetadata(): Record<string, string>;
    close(): Promise<void>;
  }
}

/** Internal type table; used to fix TIMESTAMP_MILLIS decoding (see readParquetRows). */
declare module 'parquetjs-lite/lib/types' {
  export const PARQUET_LOGICAL_TYPES: Record<string, { fromPrimitive?: (value: unknown) => unknown }>;
}
