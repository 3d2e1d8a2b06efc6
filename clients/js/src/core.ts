/**
 * The helper without a static import of rxdb: `replicateSyncdWith(replicateRxCollection, options)`.
 * `syncd-rxdb` (index) binds it to `rxdb/plugins/replication`; use this entry when your app or
 * test loads RxDB under another name (e.g. an npm alias) or from several copies.
 */
import { BehaviorSubject, Subject, type Observable } from 'rxjs';
import type {
    ReplicationOptions,
    ReplicationPullOptions,
    ReplicationPushOptions,
    RxCollection,
    RxReplicationWriteToMasterRow,
    WithDeleted,
} from 'rxdb';
import type { RxReplicationState } from 'rxdb/plugins/replication';
import { SyncdError } from './errors.js';
import { createRequester, type FetchLike, type TokenSource } from './http.js';
import { syncdStream, type WebSocketConstructor } from './stream.js';
import {
    encodeFilter, endpointUrl, pullUrl, pushUrl, SCHEMA_VERSION_HEADER, type BackoffOptions, type SyncdFilter,
} from './wire.js';

export { SyncdError } from './errors.js';
export type { SyncdErrorDetails, SyncdErrorSource } from './errors.js';
export type { FetchLike, ResponseLike, TokenSource } from './http.js';
export type { WebSocketConstructor } from './stream.js';
export {
    backoffDelay, encodeFilter, endpointUrl, isPermanentCloseCode, isPermanentStatus, pullUrl, pushUrl,
    streamTarget, withFilter, CLOSE_OUTDATED, FILTER_QUERY, OUTDATED_STATUS, SCHEMA_VERSION_HEADER,
    SCHEMA_VERSION_QUERY, type BackoffOptions, type SyncdFilter, type SyncdFilterValue,
} from './wire.js';

/** syncd's checkpoint: an opaque JSON object (today `{id, lwt}`), sent back exactly as received. */
export type SyncdCheckpoint = Record<string, unknown>;

export type SyncdReplicationOptions<RxDocType> = {
    /** The RxDB collection to replicate. */
    collection: RxCollection<RxDocType, any, any, any>;
    /**
     * syncd's base URL, e.g. `https://sync.example.com` or `http://127.0.0.1:8080` (a path prefix
     * behind a reverse proxy is kept). `/api/v1/sync/{collectionName}` is appended.
     */
    url: string;
    /** The collection's name on the server [`collection.name`]. */
    collectionName?: string;
    /** Keys the local checkpoint; a new one starts from scratch [`syncd:<endpoint URL>`]. */
    replicationIdentifier?: string;
    /**
     * Partial replication: replicate only the documents this Mango-style selector matches, e.g.
     * `{listId: 'l1'}` or `{listId: {$in: ['l2', 'l3']}, region: {$eq: 'north'}}` (`$eq` and `$in`
     * on the fields the collection's access rule declares in `"filters"`, AND across fields). Sent
     * as `filter=<encodeURIComponent(JSON.stringify(filter))>` on every pull, push and stream.
     * Documents that stop matching arrive as deletions and leave the local collection; documents
     * that start matching arrive. Starting again with the same `replicationIdentifier` and another
     * filter is a filter change: syncd first removes what the new filter no longer selects.
     * An invalid filter is a permanent 400 `invalid_filter`; a value of a claim-bound field the
     * token does not hold, a permanent 403 `forbidden_filter_value` (both reach `permanentError$`).
     */
    filter?: SyncdFilter;
    /**
     * The access token, sent as `Authorization: Bearer` on HTTP and as the websocket subprotocol
     * `bearer.<token>` (or `?access_token=` when it is no valid subprotocol). A function is called
     * before every request and reconnect, with `{refresh: true}` after a 401 / close 4401.
     */
    token?: TokenSource;
    /** Extra HTTP headers for pull and push (not sent on the websocket, which cannot carry them). */
    headers?: Record<string, string>;
    /** Keep replicating (stream + push on every local write) [true]; false syncs once, then cancels. */
    live?: boolean;
    /** Documents per pull page and per push request [100]. syncd refuses pulls above its max limit. */
    batchSize?: number;
    /** Pull options (false: push only). `handler` and `stream$` are the helper's. */
    pull?: boolean | Omit<ReplicationPullOptions<RxDocType, SyncdCheckpoint>, 'handler' | 'stream$'>;
    /** Push options (false: pull only). `handler` is the helper's. */
    push?: boolean | Omit<ReplicationPushOptions<RxDocType>, 'handler'>;
    /** Wait after a failed pull or push before RxDB retries it, in ms [RxDB's default, 5000]. */
    retryTime?: number;
    /** Reconnect backoff of the live stream [500 ms doubling up to 30 s, with jitter]. */
    reconnect?: BackoffOptions;
    /** A WebSocket class; required in Node < 22 for live replication (pass `ws`'s default export). */
    WebSocket?: WebSocketConstructor;
    /** The fetch to use [globalThis.fetch]. */
    fetch?: FetchLike;
    /**
     * Called with every permanent failure: a 4xx other than 401/408/425/429 on pull or push, or a
     * stream closed with 4000 + such a status (4404 unknown collection, 4403 forbidden, …).
     * `code: 'outdated_schema'` (426, stream 4426): the collection's schema version on syncd is
     * newer than this app's `collection.schema.version`; the app must be updated.
     */
    onPermanentError?: (error: SyncdError) => void;
    /**
     * Cancel the replication on a permanent failure [true]. With false, RxDB keeps retrying
     * every `retryTime` (and the stream reconnects with capped backoff), reporting each failure.
     */
    cancelOnPermanentError?: boolean;
    autoStart?: boolean;
    waitForLeadership?: boolean;
    /** RxDB 16.5+ only. */
    toggleOnDocumentVisible?: boolean;
};

export type SyncdReplicationState<RxDocType> = RxReplicationState<RxDocType, SyncdCheckpoint> & {
    /** The permanent failures also passed to `onPermanentError` (pull, push, stream). */
    readonly permanentError$: Observable<SyncdError>;
    /** True while the live stream is connected and syncd confirmed the subscription. */
    readonly streamConnected$: Observable<boolean>;
    /** The endpoint URL used for pull and push. */
    readonly endpoint: string;
};

/** `replicateRxCollection` of any supported RxDB version (15, 16, 17). */
export type ReplicateRxCollection = (options: ReplicationOptions<any, any>) => RxReplicationState<any, any>;

type PushRow<RxDocType> = RxReplicationWriteToMasterRow<RxDocType>;

export function replicateSyncdWith<RxDocType>(
    replicateRxCollection: ReplicateRxCollection,
    options: SyncdReplicationOptions<RxDocType>
): SyncdReplicationState<RxDocType> {
    const collectionName = options.collectionName ?? options.collection.name;
    const endpoint = endpointUrl(options.url, collectionName);
    const filter = encodeFilter(options.filter);
    const live = options.live ?? true;
    const fetchImpl: FetchLike = options.fetch ?? defaultFetch();
    const cancelOnPermanentError = options.cancelOnPermanentError ?? true;
    // Every request states the app's schema version: syncd answers an outdated one with 426.
    const schemaVersion = options.collection.schema?.version;
    const stated = typeof schemaVersion === 'number' ? schemaVersion : undefined;
    const headers: Record<string, string> = { ...options.headers };
    if (stated !== undefined) {
        headers[SCHEMA_VERSION_HEADER] = String(stated);
    }
    const request = createRequester({ fetch: fetchImpl, token: options.token, headers });
    const permanentErrors = new Subject<SyncdError>();
    const streamConnected = new BehaviorSubject<boolean>(false);

    let state: RxReplicationState<RxDocType, SyncdCheckpoint> | undefined;
    const reportPermanent = (error: SyncdError): void => {
        permanentErrors.next(error);
        try {
            options.onPermanentError?.(error);
        } catch (err) {
            console.error('syncd-rxdb: onPermanentError threw', err);
        }
        if (cancelOnPermanentError && state && !state.isStopped()) {
            const toCancel = state;
            // after the handler's rejection reached RxDB's error$, not before
            setTimeout(() => void toCancel.cancel(), 0);
        }
    };
    const failed = (err: unknown): never => {
        if (err instanceof SyncdError && err.permanent) {
            reportPermanent(err);
        }
        throw err;
    };

    const batchSize = options.batchSize;
    let pull: ReplicationPullOptions<RxDocType, SyncdCheckpoint> | undefined;
    if (options.pull !== false) {
        const extra = typeof options.pull === 'object' ? options.pull : {};
        pull = {
            batchSize,
            ...extra,
            handler: async (checkpoint, size) => {
                const answer = await request('pull', 'GET', pullUrl(endpoint, checkpoint, size, filter)).catch(failed);
                if (!isPage(answer)) {
                    throw new SyncdError(
                        `syncd pull answered something that is not {documents, checkpoint}: ${preview(answer)}`,
                        { source: 'pull', permanent: false, url: endpoint }
                    );
                }
                return answer as { documents: WithDeleted<RxDocType>[]; checkpoint: SyncdCheckpoint };
            },
        };
        if (live) {
            if (!options.WebSocket && typeof (globalThis as { WebSocket?: unknown }).WebSocket !== 'function') {
                throw new TypeError(
                    'syncd-rxdb: live replication needs a WebSocket class and this runtime has none ' +
                    "(Node < 22): pass `WebSocket` (e.g. `import WebSocket from 'ws'`), or `live: false`"
                );
            }
            pull.stream$ = syncdStream<WithDeleted<RxDocType>, SyncdCheckpoint>({
                endpoint,
                WebSocket: options.WebSocket ?? (globalThis as unknown as { WebSocket: WebSocketConstructor }).WebSocket,
                token: options.token,
                schemaVersion: stated,
                filter,
                backoff: options.reconnect ?? {},
                connected$: streamConnected,
                onPermanentError: (error) => {
                    // RxDB's error$ shows it too, but stream$ itself never errors
                    (state as unknown as { subjects?: { error?: Subject<unknown> } } | undefined)
                        ?.subjects?.error?.next(error);
                    reportPermanent(error);
                },
                retryPermanent: !cancelOnPermanentError,
            });
        }
    }

    let push: ReplicationPushOptions<RxDocType> | undefined;
    if (options.push !== false) {
        const extra = typeof options.push === 'object' ? options.push : {};
        push = {
            batchSize,
            ...extra,
            handler: async (rows: PushRow<RxDocType>[]) => {
                const answer = await request('push', 'POST', pushUrl(endpoint, filter), rows).catch(failed);
                if (!Array.isArray(answer)) {
                    throw new SyncdError(
                        `syncd push answered something that is not an array of conflicts: ${preview(answer)}`,
                        { source: 'push', permanent: false, url: endpoint }
                    );
                }
                return answer as WithDeleted<RxDocType>[];
            },
        };
    }

    const replicationOptions: ReplicationOptions<RxDocType, SyncdCheckpoint> = {
        replicationIdentifier: options.replicationIdentifier ?? `syncd:${endpoint}`,
        collection: options.collection,
        pull,
        push,
        live,
    };
    for (const key of ['retryTime', 'autoStart', 'waitForLeadership', 'toggleOnDocumentVisible'] as const) {
        if (options[key] !== undefined) {
            (replicationOptions as Record<string, unknown>)[key] = options[key];
        }
    }

    state = replicateRxCollection(replicationOptions) as RxReplicationState<RxDocType, SyncdCheckpoint>;
    state.canceled$.subscribe((canceled: boolean) => {
        if (canceled) {
            permanentErrors.complete();
        }
    });
    return Object.assign(state, {
        permanentError$: permanentErrors.asObservable(),
        streamConnected$: streamConnected.asObservable(),
        endpoint,
    });
}

function defaultFetch(): FetchLike {
    const global = globalThis as { fetch?: FetchLike };
    if (typeof global.fetch !== 'function') {
        throw new TypeError('syncd-rxdb: this runtime has no global fetch: pass `fetch`');
    }
    // called through globalThis: browsers refuse a fetch detached from window ("Illegal invocation")
    return (url, init) => (globalThis as unknown as { fetch: FetchLike }).fetch(url, init);
}

function isPage(value: unknown): boolean {
    return typeof value === 'object' && value !== null && Array.isArray((value as { documents?: unknown }).documents);
}

function preview(value: unknown): string {
    const text = JSON.stringify(value) ?? String(value);
    return text.length > 200 ? `${text.slice(0, 200)}…` : text;
}
