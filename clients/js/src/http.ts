import { SyncdError, type SyncdErrorSource } from './errors.js';
import { isPermanentStatus, OUTDATED_STATUS } from './wire.js';

/** The part of `fetch` the helper uses; the global `fetch` of browsers and Node 18+ fits. */
export type FetchLike = (
    url: string,
    init: { method: string; headers: Record<string, string>; body?: string }
) => Promise<ResponseLike>;

export type ResponseLike = {
    readonly ok: boolean;
    readonly status: number;
    readonly statusText?: string;
    text(): Promise<string>;
};

/**
 * Where the access token comes from. A function is called again before every request and every
 * reconnect, so it can hand out a refreshed token; `refresh` is true after syncd answered 401 or
 * closed the stream with 4401 (the token it was given is no longer accepted).
 */
export type TokenSource =
    | string
    | null
    | undefined
    | ((context: { refresh: boolean }) => string | null | undefined | Promise<string | null | undefined>);

export async function resolveToken(source: TokenSource, refresh: boolean): Promise<string | undefined> {
    if (typeof source !== 'function') {
        return source ?? undefined;
    }
    try {
        return (await source({ refresh })) ?? undefined;
    } catch (err) {
        throw new SyncdError(`syncd-rxdb: the token function failed: ${describe(err)}`, {
            source: 'token', permanent: false, cause: err,
        });
    }
}

export type Requester = (
    source: SyncdErrorSource,
    method: 'GET' | 'POST',
    url: string,
    body?: unknown
) => Promise<unknown>;

/**
 * One JSON request with the current token. A 401 is retried once at once with a refreshed token
 * (when the token is a function); any other non-2xx answer, a network failure or a body that is
 * not JSON throws a {@link SyncdError} (permanent or not, see `isPermanentStatus`).
 */
export function createRequester(options: {
    fetch: FetchLike;
    token: TokenSource;
    headers: Record<string, string>;
}): Requester {
    return async (source, method, url, body) => {
        const canRefresh = typeof options.token === 'function';
        for (let attempt = 0; ; attempt++) {
            const token = await resolveToken(options.token, attempt > 0);
            const headers: Record<string, string> = { accept: 'application/json', ...options.headers };
            if (token) {
                headers.authorization = `Bearer ${token}`;
            }
            const init: { method: string; headers: Record<string, string>; body?: string } = { method, headers };
            if (body !== undefined) {
                headers['content-type'] = 'application/json';
                init.body = JSON.stringify(body);
            }
            let response: ResponseLike;
            try {
                response = await options.fetch(url, init);
            } catch (err) {
                throw new SyncdError(`syncd ${source} failed: ${describe(err)} (${method} ${url})`, {
                    source, permanent: false, url, cause: err,
                });
            }
            if (response.status === 401 && canRefresh && attempt === 0) {
                await discard(response);
                continue;
            }
            let text: string;
            try {
                text = await response.text();
            } catch (err) {
                throw new SyncdError(`syncd ${source} failed while reading the answer: ${describe(err)}`, {
                    source, permanent: false, status: response.status, url, cause: err,
                });
            }
            if (!response.ok) {
                throw errorFromAnswer(source, method, url, response, text);
            }
            try {
                return JSON.parse(text) as unknown;
            } catch (err) {
                throw new SyncdError(
                    `syncd ${source} answered ${response.status} with a body that is not JSON: ${clip(text)}`,
                    { source, permanent: false, status: response.status, url, cause: err }
                );
            }
        }
    };
}

function errorFromAnswer(
    source: SyncdErrorSource, method: string, url: string, response: ResponseLike, text: string
): SyncdError {
    const status = response.status;
    const permanent = isPermanentStatus(status);
    let code: string | undefined;
    let message: string | undefined;
    let details: unknown;
    try {
        const parsed = JSON.parse(text) as { error?: { code?: unknown; message?: unknown; details?: unknown } };
        if (parsed && typeof parsed.error === 'object' && parsed.error !== null) {
            code = typeof parsed.error.code === 'string' ? parsed.error.code : undefined;
            message = typeof parsed.error.message === 'string' ? parsed.error.message : undefined;
            details = parsed.error.details;
        }
    } catch {
        // not syncd's envelope (a proxy's page, say): report the raw text
    }
    const what = message ?? (clip(text) || response.statusText || 'no body');
    const kind = status === OUTDATED_STATUS
        ? 'permanent; this version of the app is outdated: update it to the schema version syncd has'
        : permanent ? 'permanent; retrying the same request cannot succeed'
        : status === 401 ? 'unauthorized; retried with a fresh token'
            : 'retried';
    return new SyncdError(
        `syncd ${source} failed: ${status}${code ? ` ${code}` : ''}: ${what} (${method} ${url}; ${kind})`,
        { source, permanent, status, code, details, url }
    );
}

async function discard(response: ResponseLike): Promise<void> {
    try {
        await response.text();
    } catch {
        // nothing to do: the body was only read to free the connection
    }
}

export function describe(err: unknown): string {
    if (err instanceof Error) {
        const cause = (err as { cause?: unknown }).cause;
        return cause instanceof Error ? `${err.message} (${cause.message})` : err.message;
    }
    return String(err);
}

function clip(text: string): string {
    return text.length > 300 ? `${text.slice(0, 300)}…` : text;
}
