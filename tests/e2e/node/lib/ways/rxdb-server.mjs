/**
 * Way in: RxDB's own `replicateServer` (npm rxdb-server 15.22.0, HTTP + Server-Sent Events)
 * against `http://HOST:PORT/rxdb/{collection}/{schemaVersion}`.
 *
 * - rxdb-server 15.22.0 only works through CommonJS (rxdb-protocol.md §0), and its own
 *   `require('rxdb')` must find the copy of rxdb under test: this way loads rxdb as CJS (format
 *   'cjs'), and lib/rxdb.mjs takes rxdb, rxdb-server and eventsource from this project for '17'
 *   and from ../node-rxdb15 (rxdb@15.39.0 as the package `rxdb`) for '15'.
 * - It calls the global fetch and has no fetch option: pulls are counted by a wrapper around
 *   globalThis.fetch that tells the clients apart by the header x-e2e-replication.
 * - The SSE client is `eventsource` 2 (rxdb-server's own dependency), passed explicitly.
 * - A filter (partial replication) goes in the URL path: `/rxdb/{c}/{v}/filter/{encodeURIComponent(JSON)}`.
 * - A token function is asked again (`{refresh: true}`) on every `unauthorized$`, and the new
 *   token is set as `replicationState.headers`, as docs/rxdb-compat.md tells apps to: the client
 *   retries pull and push, and reopens the SSE stream, with those headers.
 */
import { ReplicationStats } from '../stats.mjs';

const REPLICATION_HEADER = 'x-e2e-replication';
const statsByReplication = new Map();
let fetchWrapped = false;

function countPullsOfGlobalFetch() {
    if (fetchWrapped) {
        return;
    }
    fetchWrapped = true;
    const original = globalThis.fetch;
    globalThis.fetch = async (url, init = {}) => {
        const response = await original(url, init);
        const stats = statsByReplication.get(init.headers?.[REPLICATION_HEADER]);
        if (stats && String(url).includes('/pull?')) {
            const body = await response.clone().json().catch(() => null);
            stats.pulled(Array.isArray(body?.documents) ? body.documents.length : 0);
        } else if (stats && String(url).endsWith('/push')) {
            stats.pushed(JSON.parse(init.body).length);
        }
        return response;
    };
}

export const rxdbServer = {
    name: 'rxdb-server',
    versions: ['17', '15'],
    format: 'cjs',

    async replicate(args) {
        const { replicateServer } = args.rx.require('rxdb-server/plugins/replication-server');
        const EventSource = args.rx.require('eventsource');
        countPullsOfGlobalFetch();
        const stats = new ReplicationStats();
        statsByReplication.set(args.identifier, stats);

        let openStreams = 0;
        // Track the SSE connection by wrapping the on… handlers replicateServer sets (eventsource 2
        // drops every listener of a type when its on… property is set, so addEventListener is no use).
        class TrackedEventSource extends EventSource {
            #open = false;
            #mark(open) {
                if (open !== this.#open) {
                    this.#open = open;
                    openStreams += open ? 1 : -1;
                    stats.liveChanged(open);
                }
            }
            get onopen() {
                return super.onopen;
            }
            set onopen(handler) {
                super.onopen = (event) => {
                    this.#mark(true);
                    return handler?.(event);
                };
            }
            get onerror() {
                return super.onerror;
            }
            set onerror(handler) {
                super.onerror = (event) => {
                    this.#mark(false);
                    return handler?.(event);
                };
            }
            close() {
                this.#mark(false);
                return super.close();
            }
        }

        const token = typeof args.token === 'function' ? await args.token({ refresh: false }) : args.token;
        const headers = { [REPLICATION_HEADER]: args.identifier };
        if (token) {
            headers.authorization = `Bearer ${token}`;
        }
        const schemaVersion = args.collection.schema.version;
        // a filter goes in the URL path (docs/partial-sync.md): the client appends /pull, /push
        // and /pullStream to it, and a path works with every EventSource
        const filter = args.filter ? `/filter/${encodeURIComponent(JSON.stringify(args.filter))}` : '';
        const state = replicateServer({
            collection: args.collection,
            replicationIdentifier: args.identifier,
            url: `${args.syncdUrl}/rxdb/${args.collectionName}/${schemaVersion}${filter}`,
            headers,
            live: args.live,
            retryTime: args.retryTime,
            pull: { batchSize: args.pullBatchSize ?? args.batchSize },
            push: { batchSize: args.pushBatchSize ?? args.batchSize },
            eventSource: TrackedEventSource,
        });
        const signals = { unauthorized: 0, forbidden: 0, outdated: 0, permanentErrors: [] };
        state.unauthorized$.subscribe(() => {
            signals.unauthorized += 1;
            if (typeof args.token !== 'function') {
                return;
            }
            Promise.resolve(args.token({ refresh: true })).then((fresh) => {
                state.headers = { ...state.headers, authorization: `Bearer ${fresh}` };
            }).catch((err) => console.log(`(rxdb-server way: refreshing the token failed: ${err.message})`));
        });
        state.forbidden$.subscribe(() => {
            signals.forbidden += 1;
        });
        state.outdatedClient$.subscribe(() => {
            signals.outdated += 1;
        });
        return { state, stats, signals, isLive: () => openStreams > 0 };
    },
};
