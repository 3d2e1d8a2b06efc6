import { BehaviorSubject, Observable } from 'rxjs';
import { SyncdError } from './errors.js';
import { resolveToken, describe, type TokenSource } from './http.js';
import {
    backoffDelay, CLOSE_OUTDATED, CLOSE_REAUTHENTICATE, isPermanentCloseCode, streamTarget,
    type BackoffOptions,
} from './wire.js';

/**
 * A WebSocket class: the browser's global `WebSocket`, or `ws`'s default export in Node (Node 20
 * has no global WebSocket). Only the constructor, the `on…` handlers and `close()` are used.
 */
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => unknown;

/** What the helper needs of a socket instance (browser WebSocket and `ws` both have it). */
type SocketLike = {
    onopen: ((event: unknown) => void) | null;
    onmessage: ((event: { data: unknown }) => void) | null;
    onclose: ((event: { code: number; reason?: string }) => void) | null;
    onerror: ((event: unknown) => void) | null;
    close(code?: number, reason?: string): void;
};

/** `{documents, checkpoint}` or `'RESYNC'`: what RxDB's `pull.stream$` carries. */
export type StreamItem<Doc, Checkpoint> = { documents: Doc[]; checkpoint: Checkpoint } | 'RESYNC';

export type StreamOptions = {
    endpoint: string;
    WebSocket: WebSocketConstructor;
    token: TokenSource;
    /** The app's RxDB schema version, sent as `?schemaVersion=`; an outdated one closes with 4426. */
    schemaVersion?: number;
    /** The replication's filter as JSON (`encodeFilter`), sent as `?filter=`; none: unfiltered. */
    filter?: string;
    backoff: BackoffOptions;
    /** True while a socket is open and syncd confirmed the subscription (its opening "RESYNC"). */
    connected$: BehaviorSubject<boolean>;
    /** A close code that retrying cannot get past (4404, 4403, …); the stream stops after it. */
    onPermanentError: (error: SyncdError) => void;
    /** Keep reconnecting (with capped backoff) after a permanent close instead of stopping. */
    retryPermanent: boolean;
    random?: () => number;
};

/**
 * The live stream as a cold observable: subscribing opens the websocket, unsubscribing closes it.
 * It never errors and never completes on its own; instead it
 * - emits 'RESYNC' (twice in a row: see `resync`) once per (re)connection, when syncd confirms
 *   the subscription (syncd sends "RESYNC" first, after it registered the subscriber, so the
 *   pull RxDB then runs cannot miss a change), and again for every later "RESYNC" from syncd;
 * - reconnects after every close with exponential backoff with jitter (reset once a connection
 *   was confirmed), at once with a refreshed token after 4401;
 * - stops for good after a permanent close code (4000 + a permanent 4xx), after reporting it.
 */
export function syncdStream<Doc, Checkpoint>(options: StreamOptions): Observable<StreamItem<Doc, Checkpoint>> {
    return new Observable<StreamItem<Doc, Checkpoint>>((subscriber) => {
        let stopped = false;
        let socket: SocketLike | undefined;
        let timer: ReturnType<typeof setTimeout> | undefined;
        let attempt = 0;
        let refresh = false;

        // RxDB's downstream (rxdb 15 and 17, replication-protocol/downstream) takes the queued
        // stream events in one batch and drops a 'RESYNC' that follows events in that batch; it
        // queues them while a push is running, so the frames of a closing socket and the next
        // socket's 'RESYNC' often meet there, and the pull that would close the gap never runs.
        // The second 'RESYNC' survives; when the first one runs, its pull makes RxDB skip the
        // second, so the normal case costs nothing.
        const resync = (): void => {
            subscriber.next('RESYNC');
            subscriber.next('RESYNC');
        };

        const schedule = (delay: number): void => {
            if (stopped) {
                return;
            }
            timer = setTimeout(() => {
                timer = undefined;
                void connect();
            }, delay);
        };
        const scheduleBackoff = (): void => schedule(backoffDelay(attempt++, options.backoff, options.random));

        const connect = async (): Promise<void> => {
            let token: string | undefined;
            try {
                token = await resolveToken(options.token, refresh);
            } catch {
                scheduleBackoff();
                return;
            }
            if (stopped) {
                return;
            }
            const target = streamTarget(options.endpoint, token, options.schemaVersion, options.filter);
            let ws: SocketLike;
            try {
                ws = new options.WebSocket(target.url, target.protocols) as SocketLike;
            } catch {
                scheduleBackoff();
                return;
            }
            socket = ws;
            let confirmed = false;
            ws.onopen = null;
            ws.onerror = () => {
                // a close event follows; reconnecting is decided there
            };
            ws.onmessage = (event) => {
                if (stopped || socket !== ws) {
                    return;
                }
                const item = parseFrame<Doc, Checkpoint>(event.data);
                if (!confirmed) {
                    confirmed = true;
                    attempt = 0;
                    refresh = false;
                    options.connected$.next(true);
                    resync();
                    if (item === 'RESYNC') {
                        return;
                    }
                }
                if (item === 'RESYNC') {
                    resync();
                } else {
                    subscriber.next(item);
                }
            };
            ws.onclose = (event) => {
                if (socket !== ws) {
                    return;
                }
                socket = undefined;
                if (confirmed) {
                    options.connected$.next(false);
                }
                if (stopped) {
                    return;
                }
                const code = event.code;
                if (code === CLOSE_REAUTHENTICATE) {
                    const first = !refresh;
                    refresh = true;
                    if (first && confirmed) {
                        schedule(0);  // the token expired mid-stream: straight back with a fresh one
                    } else {
                        scheduleBackoff();
                    }
                    return;
                }
                if (isPermanentCloseCode(code)) {
                    const reason = event.reason ? `: ${event.reason}` : '';
                    // the close event has no room for syncd's error code; 4426 has only one
                    const outdated = code === CLOSE_OUTDATED;
                    const what = outdated ? ' outdated_schema (update the app)' : '';
                    options.onPermanentError(new SyncdError(
                        `syncd stream closed with ${code}${what}${reason} (${target.url.split('?')[0]}; ` +
                        `permanent; ${options.retryPermanent ? 'reconnecting with backoff' : 'not reconnecting'})`,
                        {
                            source: 'stream', permanent: true, closeCode: code, status: code - 4000,
                            code: outdated ? 'outdated_schema' : undefined, url: target.url.split('?')[0],
                        }
                    ));
                    if (!options.retryPermanent) {
                        return;
                    }
                }
                scheduleBackoff();
            };
        };

        void connect().catch((err) => {
            // connect() handles its own failures; this is a last line so stream$ never errors
            console.error(`syncd-rxdb: stream connect failed: ${describe(err)}`);
            scheduleBackoff();
        });

        return () => {
            stopped = true;
            if (timer !== undefined) {
                clearTimeout(timer);
            }
            const open = socket;
            socket = undefined;
            if (open) {
                open.onmessage = null;
                try {
                    open.close(1000, 'replication stopped');
                } catch {
                    // closing a socket that is still connecting may throw in some implementations
                }
            }
            if (options.connected$.getValue()) {
                options.connected$.next(false);
            }
        };
    });
}

/** A frame from syncd: "RESYNC", or `{documents, checkpoint}`; anything else is treated as RESYNC. */
export function parseFrame<Doc, Checkpoint>(data: unknown): StreamItem<Doc, Checkpoint> {
    let text: string;
    if (typeof data === 'string') {
        text = data;
    } else if (data instanceof ArrayBuffer || ArrayBuffer.isView(data)) {
        text = new TextDecoder().decode(data as ArrayBuffer);
    } else {
        return 'RESYNC';
    }
    let value: unknown;
    try {
        value = JSON.parse(text);
    } catch {
        return 'RESYNC';
    }
    if (value && typeof value === 'object' && Array.isArray((value as { documents?: unknown }).documents)) {
        const frame = value as { documents: Doc[]; checkpoint: Checkpoint };
        return { documents: frame.documents, checkpoint: frame.checkpoint };
    }
    // "RESYNC" itself, or a frame this helper does not understand: pulling is always safe
    return 'RESYNC';
}
