/**
 * Ways in: how an RxDB collection replicates with syncd. Every scenario runs through a way, so a
 * new way in is one file here plus one line in WAYS (and its name in tests/e2e/test_rxdb_clients.py).
 *
 * A way is `{ name, versions, format, replicate(args) }`:
 *   versions  the RxDB versions ('17', '15') it can run with
 *   format    'esm' or 'cjs': how lib/rxdb.mjs loads rxdb for it (the database and the
 *             replication must come from the same copy of rxdb)
 *   replicate(args: ReplicateArgs) → Promise<Replication>
 *
 * @typedef {object} ReplicateArgs
 * @property {object} rx             the version adapter of lib/rxdb.mjs (rx.replicateRxCollection, rx.plugin(name), rx.require)
 * @property {object} collection     the RxCollection to replicate
 * @property {string} collectionName the collection's name in syncd
 * @property {string} syncdUrl       e.g. http://127.0.0.1:8123
 * @property {string} identifier     replicationIdentifier: the same one resumes from the stored checkpoint
 * @property {boolean} live
 * @property {number} [batchSize]    pull and push batch size
 * @property {number} [pullBatchSize]
 * @property {number} [pushBatchSize]
 * @property {number} retryTime      ms before RxDB retries a failed pull/push
 * @property {{initialDelay: number, maxDelay: number}} reconnect  backoff of the live channel
 * @property {string|function|undefined} token  the credentials: a string, or `({refresh}) → token`
 *           (native: the helper's token option; rxdb-server: Authorization header, refreshed on
 *           unauthorized$; websocket: the `auth` message, refreshed before expiry; see
 *           scenarios/auth.mjs)
 * @property {object|undefined} filter  partial replication (docs/partial-sync.md): a Mango-style
 *           selector such as `{listId: 'l1'}` (native: the helper's `filter` option, `filter=` on
 *           pull, push and stream; rxdb-server: `/filter/{encodeURIComponent(JSON)}` in the URL
 *           path; rxdb-websocket: `&filter=` on the socket URL)
 *
 * @typedef {object} Replication
 * @property {object} state          the RxReplicationState (error$, received$, awaitInSync(), cancel(), …)
 * @property {import('../stats.mjs').ReplicationStats} stats  pull/push counters; a way that cannot
 *           see its pull requests sets `stats.countsPulls = false` and the scenarios skip the
 *           checks that need them (received$ is counted by the harness for every way)
 * @property {() => boolean} isLive  true while the live channel (websocket, SSE) is connected (a
 *           way that cannot see it sets `stats.seesLive = false`; the scenarios then skip the
 *           connection checks)
 * @property {Signals} signals      what the client told the app about credentials and versions
 *
 * @typedef {object} Signals
 * @property {number} unauthorized   rxdb-server's unauthorized$ emissions (0 for other ways)
 * @property {number} forbidden      rxdb-server's forbidden$ emissions
 * @property {number} outdated       rxdb-server's outdatedClient$ emissions
 * @property {object[]} permanentErrors  the helper's permanentError$ ({source, status, code, closeCode})
 */
import { native } from './native.mjs';
import { rxdbServer } from './rxdb-server.mjs';
import { rxdbWebsocket } from './rxdb-websocket.mjs';

export const WAYS = {
    [native.name]: native,
    [rxdbServer.name]: rxdbServer,
    [rxdbWebsocket.name]: rxdbWebsocket,
};

export function getWay(name) {
    const way = WAYS[name];
    if (!way) {
        throw new Error(`unknown way in ${JSON.stringify(name)}; known: ${Object.keys(WAYS).join(', ')}`);
    }
    return way;
}
