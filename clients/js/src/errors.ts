/** Where a failure happened: a pull request, a push request, the live stream, or the token source. */
export type SyncdErrorSource = 'pull' | 'push' | 'stream' | 'token';

export type SyncdErrorDetails = {
    source: SyncdErrorSource;
    /** True when retrying the same request cannot succeed (see `isPermanentStatus`). */
    permanent: boolean;
    /** HTTP status of the answer, if there was one. */
    status?: number;
    /** Websocket close code, for stream failures. */
    closeCode?: number;
    /** syncd's machine-readable `error.code`, e.g. `unknown_collection`, `schema_violation`. */
    code?: string;
    /** syncd's `error.details`, e.g. the offending document ids of a `schema_violation`. */
    details?: unknown;
    url?: string;
    cause?: unknown;
};

/** A failed request to syncd, or a stream it closed for good. */
export class SyncdError extends Error {
    readonly source: SyncdErrorSource;
    readonly permanent: boolean;
    readonly status: number | undefined;
    readonly closeCode: number | undefined;
    readonly code: string | undefined;
    readonly details: unknown;
    readonly url: string | undefined;
    /** The same facts as plain JSON: RxDB copies `code`, `url` and `parameters` into `error$`. */
    readonly parameters: Record<string, unknown>;

    constructor(message: string, details: SyncdErrorDetails) {
        super(message, details.cause === undefined ? undefined : { cause: details.cause });
        this.name = 'SyncdError';
        this.source = details.source;
        this.permanent = details.permanent;
        this.status = details.status;
        this.closeCode = details.closeCode;
        this.code = details.code;
        this.details = details.details;
        this.url = details.url;
        this.parameters = {
            source: this.source,
            permanent: this.permanent,
            status: this.status,
            closeCode: this.closeCode,
            details: this.details,
        };
    }

    toJSON(): Record<string, unknown> {
        return {
            name: this.name,
            message: this.message,
            source: this.source,
            permanent: this.permanent,
            status: this.status,
            closeCode: this.closeCode,
            code: this.code,
            details: this.details,
            url: this.url,
        };
    }
}
