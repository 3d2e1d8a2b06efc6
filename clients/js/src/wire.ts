/**
 * Pure rules of syncd's native API, as the helper uses them: endpoint URLs, checkpoint encoding,
 * which failures are permanent, and the reconnect backoff. No I/O here.
 */

/** The path under a syncd base URL where the native API lives. */
export const API_PATH = '/api/v1/sync/';

/** Subprotocol syncd selects on its stream; the token rides next to it as `bearer.<token>`. */
export const STREAM_SUBPROTOCOL = 'syncd.v1';
export const TOKEN_SUBPROTOCOL_PREFIX = 'bearer.';

/** Close code syncd uses when the credentials expired during a stream: reconnect with fresh ones. */
export const CLOSE_REAUTHENTICATE = 4401;

/**
 * The app's RxDB schema version (`collection.schema.version`) goes with every request: as this
 * header on pull and push, as this query parameter on the stream (a browser's WebSocket cannot
 * set headers). syncd answers an older version than the collection's with 426 `outdated_schema`
 * (the stream closes with {@link CLOSE_OUTDATED}): permanent, the app must be updated.
 */
export const SCHEMA_VERSION_HEADER = 'x-syncd-schema-version';
export const SCHEMA_VERSION_QUERY = 'schemaVersion';
export const OUTDATED_STATUS = 426;
export const CLOSE_OUTDATED = 4000 + OUTDATED_STATUS;

/**
 * `https://sync.example.com/base` + `todos` → `https://sync.example.com/base/api/v1/sync/todos`.
 * The collection name is percent-encoded as one path segment.
 */
export function endpointUrl(baseUrl: string, collectionName: string): string {
    if (!baseUrl) {
        throw new TypeError('syncd-rxdb: `url` is required (the syncd base URL, e.g. http://127.0.0.1:8080)');
    }
    if (!collectionName) {
        throw new TypeError('syncd-rxdb: the server-side collection name is empty');
    }
    const parsed = new URL(baseUrl);
    if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') {
        throw new TypeError(`syncd-rxdb: \`url\` must be http(s), got ${JSON.stringify(baseUrl)}`);
    }
    if (parsed.search || parsed.hash) {
        throw new TypeError(`syncd-rxdb: \`url\` must not carry a query or fragment, got ${JSON.stringify(baseUrl)}`);
    }
    if (parsed.pathname.includes(API_PATH.slice(0, -1))) {
        throw new TypeError(
            `syncd-rxdb: \`url\` is syncd's base URL (e.g. ${parsed.origin}), not an endpoint; ` +
            `got ${JSON.stringify(baseUrl)}`
        );
    }
    const base = (parsed.origin + parsed.pathname).replace(/\/+$/, '');
    return base + API_PATH + encodeURIComponent(collectionName);
}

/** The query parameter that carries a replication's filter on pull, push and stream. */
export const FILTER_QUERY = 'filter';

/** A value a filter may compare with: syncd's filter fields are strings, numbers or booleans. */
export type SyncdFilterValue = string | number | boolean;

/**
 * What a replication asks for (partial replication): a Mango-style selector on the fields the
 * collection's access rule declares in `"filters"`, `$eq` and `$in` only, AND across fields,
 * e.g. `{listId: 'l1'}`, `{listId: {$in: ['l1', 'l2']}, region: 'north'}`,
 * `{region: {$eq: 'north'}}`. syncd answers anything else with 400 `invalid_filter`, and a value
 * of a claim-bound field the caller's token does not hold with 403 `forbidden_filter_value`.
 */
export type SyncdFilter = Record<
    string,
    SyncdFilterValue | { $eq: SyncdFilterValue } | { $in: SyncdFilterValue[] }
>;

/**
 * The filter as it goes on the wire: `JSON.stringify(filter)`; undefined when there is none
 * (an unfiltered replication sends no `filter=` at all). Refuses what is not a plain object, so a
 * mistake (a string, an array) fails at once rather than as a 400 on every request.
 */
export function encodeFilter(filter: SyncdFilter | null | undefined): string | undefined {
    if (filter === undefined || filter === null) {
        return undefined;
    }
    if (typeof filter !== 'object' || Array.isArray(filter)) {
        throw new TypeError(
            `syncd-rxdb: \`filter\` must be a selector object like {listId: 'l1'}, got ${JSON.stringify(filter)}`
        );
    }
    return JSON.stringify(filter);
}

/** `url` plus `filter=<encodeURIComponent(encoded)>` (after `?` or `&`); unchanged without one. */
export function withFilter(url: string, encodedFilter: string | undefined): string {
    if (encodedFilter === undefined) {
        return url;
    }
    return `${url}${url.includes('?') ? '&' : '?'}${FILTER_QUERY}=${encodeURIComponent(encodedFilter)}`;
}

/**
 * The pull URL: `?limit=N`, plus `&checkpoint=<encodeURIComponent(JSON.stringify(cp))>` unless this
 * is the first pull, plus `&filter=…` for a filtered replication (`encodedFilter`, see
 * {@link encodeFilter}). The checkpoint is opaque: it goes back exactly as the server sent it.
 */
export function pullUrl(endpoint: string, checkpoint: unknown, batchSize: number, encodedFilter?: string): string {
    let url = `${endpoint}?limit=${encodeURIComponent(String(batchSize))}`;
    if (checkpoint !== undefined && checkpoint !== null) {
        url += `&checkpoint=${encodeURIComponent(JSON.stringify(checkpoint))}`;
    }
    return withFilter(url, encodedFilter);
}

/** The push URL: the endpoint, plus `?filter=…` for a filtered replication. */
export function pushUrl(endpoint: string, encodedFilter?: string): string {
    return withFilter(endpoint, encodedFilter);
}

/** `http(s)://…/api/v1/sync/todos` → `ws(s)://…/api/v1/sync/todos/stream`. */
export function streamUrl(endpoint: string): string {
    return endpoint.replace(/^http/, 'ws') + '/stream';
}

/**
 * Where the websocket carries the token (and the app's schema version, as `?schemaVersion=`, and
 * the replication's filter, as `?filter=`). Browsers cannot set an Authorization header on a
 * websocket, so the token is offered as the subprotocol `bearer.<token>` (next to `syncd.v1`,
 * which syncd selects; the token is never echoed back). A subprotocol must be an RFC 7230
 * token; tokens with other characters (e.g. base64 with `/`, `+`, `=`) go in the query
 * parameter `access_token` instead, where they can end up in proxy logs.
 */
export function streamTarget(
    endpoint: string, token: string | undefined, schemaVersion?: number, encodedFilter?: string
): { url: string; protocols: string[] } {
    const query: string[] = [];
    if (schemaVersion !== undefined) {
        query.push(`${SCHEMA_VERSION_QUERY}=${encodeURIComponent(String(schemaVersion))}`);
    }
    if (encodedFilter !== undefined) {
        query.push(`${FILTER_QUERY}=${encodeURIComponent(encodedFilter)}`);
    }
    const protocols = [STREAM_SUBPROTOCOL];
    if (token && /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/.test(token)) {
        protocols.push(TOKEN_SUBPROTOCOL_PREFIX + token);
    } else if (token) {
        query.push(`access_token=${encodeURIComponent(token)}`);
    }
    const url = streamUrl(endpoint);
    return { url: query.length ? `${url}?${query.join('&')}` : url, protocols };
}

/**
 * A 4xx that the same request will never get past by retrying: 400, 403, 404, 405, 409, 410,
 * 413, 415, 422, 426 and every other 4xx except
 * - 401 (the token is refreshed and the request retried),
 * - 408 (request timeout), 425 (too early) and 429 (too many requests), which are about timing.
 * 5xx, network failures and unparseable answers are transient: RxDB retries them after
 * `retryTime`.
 */
export function isPermanentStatus(status: number): boolean {
    return status >= 400 && status < 500 && status !== 401 && status !== 408 && status !== 425 && status !== 429;
}

/**
 * syncd closes a stream with 4000 + an HTTP status when the request cannot work as sent (4404
 * unknown collection, 4403 forbidden); those follow {@link isPermanentStatus}. 4401 means "the
 * credentials expired: reconnect with fresh ones". Everything else (1006 dropped, 1011, 1012
 * restart, 1013 try again later, …) is transient: reconnect with backoff.
 */
export function isPermanentCloseCode(code: number): boolean {
    return code >= 4000 && code < 5000 && isPermanentStatus(code - 4000);
}

export type BackoffOptions = {
    /** First reconnect delay's upper bound in ms [500]. */
    initialDelay?: number;
    /** Cap for any reconnect delay in ms [30000]. */
    maxDelay?: number;
    /** Growth per failed attempt [2]. */
    factor?: number;
};

/**
 * Exponential backoff with "equal jitter": the ceiling is `initialDelay * factor^attempt`, capped at
 * `maxDelay`, and the delay is uniformly drawn from [ceiling / 2, ceiling]. So it never hammers
 * (at least half the ceiling), spreads reconnecting clients apart, and never exceeds the cap.
 */
export function backoffDelay(attempt: number, options: BackoffOptions = {}, random: () => number = Math.random): number {
    const initialDelay = options.initialDelay ?? 500;
    const maxDelay = options.maxDelay ?? 30_000;
    const factor = options.factor ?? 2;
    const ceiling = Math.min(maxDelay, initialDelay * Math.pow(factor, Math.max(0, attempt)));
    return Math.round(ceiling / 2 + random() * (ceiling / 2));
}
