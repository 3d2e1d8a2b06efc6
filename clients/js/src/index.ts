/**
 * syncd-rxdb: replicate an RxDB collection with a syncd server in one call.
 *
 *     const replication = replicateSyncd({ collection: db.todos, url: 'https://sync.example.com' });
 */
import { replicateRxCollection } from 'rxdb/plugins/replication';
import {
    replicateSyncdWith,
    type ReplicateRxCollection,
    type SyncdReplicationOptions,
    type SyncdReplicationState,
} from './core.js';

export { SyncdError } from './errors.js';
export type { SyncdErrorDetails, SyncdErrorSource } from './errors.js';
export type {
    BackoffOptions, FetchLike, ResponseLike, SyncdCheckpoint, SyncdFilter, SyncdFilterValue,
    SyncdReplicationOptions, SyncdReplicationState, TokenSource, WebSocketConstructor,
} from './core.js';

/**
 * Wire `replicateRxCollection` to syncd's native API: pull pages with the checkpoint JSON- and
 * URL-encoded, push rows and hand syncd's conflicts to RxDB, and (live) a websocket stream that
 * reconnects with backoff and makes RxDB resync on every (re)connect. Returns RxDB's replication
 * state plus `permanentError$`, `streamConnected$` and `endpoint`.
 */
export function replicateSyncd<RxDocType>(
    options: SyncdReplicationOptions<RxDocType>
): SyncdReplicationState<RxDocType> {
    return replicateSyncdWith(replicateRxCollection as unknown as ReplicateRxCollection, options);
}
