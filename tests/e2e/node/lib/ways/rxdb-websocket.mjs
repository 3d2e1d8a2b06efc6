/**
 * Way in: RxDB's own `replicateWithWebsocketServer` (rxdb/plugins/replication-websocket of the
 * version under test) against `ws://HOST:PORT/rxdb/ws`.
 *
 * - The client names the collection by the RxDB collection's own name; the harness gives the
 *   RxDB collection the same name as the syncd collection, so that matches.
 * - It resolves only once the first socket is open (it hangs while syncd is unreachable).
 * - Pull requests are websocket messages, and the socket (with its reconnects) is internal to the
 *   client: stats.countsPulls = stats.seesLive = false, and the scenarios skip the checks that
 *   need pull counts or connection counts (received$ still counts documents, and deliveries
 *   through the stream are still timed).
 * - The app's schema version goes in the URL (`?schemaVersion=N`), which the client passes through
 *   unchanged: syncd fails every request of an outdated client with `outdated_schema`. A filter
 *   (partial replication) goes there too, as `&filter=<encodeURIComponent(JSON)>`.
 * - Credentials go in the `auth` message, as `headers`, which the client sends again from
 *   `options.headers` on every (re)connect. It gives the app no sign of a 401: syncd answers the
 *   requests (empty page, `result: null`) and closes with 4401, the client reconnects silently.
 *   Its URL is fixed in RxDB 17 (its own ReconnectingWebSocket takes a string), so a token in the
 *   URL cannot be renewed either. What the app can do, and this way does with a token function:
 *   refresh the token ahead of its `exp` and put it in `options.headers`, so that the reconnect
 *   after syncd's 4401 close authenticates with the fresh one.
 */
import { ReplicationStats } from '../stats.mjs';

export const rxdbWebsocket = {
    name: 'rxdb-websocket',
    versions: ['17', '15'],
    format: 'esm',

    async replicate(args) {
        const { replicateWithWebsocketServer } = await args.rx.plugin('replication-websocket');
        const stats = new ReplicationStats();
        stats.countsPulls = false;
        stats.seesLive = false;
        const token = typeof args.token === 'function' ? await args.token({ refresh: false }) : args.token;
        const options = {
            collection: args.collection,
            replicationIdentifier: args.identifier,
            // the client's messages carry no schema version: the URL does (docs/rxdb-compat.md)
            // and a filter (partial replication) too, for every collection over this socket
            url: `${args.syncdUrl.replace(/^http/, 'ws')}/rxdb/ws?schemaVersion=${args.collection.schema.version}` +
                (args.filter ? `&filter=${encodeURIComponent(JSON.stringify(args.filter))}` : ''),
            live: args.live,
            batchSize: args.batchSize,
            headers: token ? { authorization: `Bearer ${token}` } : undefined,
        };
        let timer;
        let stopped = false;
        if (typeof args.token === 'function') {
            // refresh 1 s before `exp`: the client reads options.headers again on its reconnect
            const schedule = (jwt) => {
                const exp = jwtExpiry(jwt);
                if (exp === undefined || stopped) {
                    return;
                }
                timer = setTimeout(async () => {
                    try {
                        const fresh = await args.token({ refresh: true });
                        options.headers = { authorization: `Bearer ${fresh}` };
                        schedule(fresh);
                    } catch (err) {
                        console.log(`(rxdb-websocket way: refreshing the token failed: ${err.message})`);
                    }
                }, Math.max(0, exp * 1000 - Date.now() - 1000));
            };
            schedule(token);
        }
        const state = await replicateWithWebsocketServer(options);
        state.onCancel?.push(() => {
            stopped = true;
            clearTimeout(timer);
        });
        const signals = { unauthorized: 0, forbidden: 0, outdated: 0, permanentErrors: [] };
        return { state, stats, signals, isLive: () => !state.isStopped() };
    },
};

/** The `exp` claim (seconds) of a JWT, or undefined for anything else. */
function jwtExpiry(token) {
    try {
        const payload = JSON.parse(Buffer.from(String(token).split('.')[1], 'base64url').toString('utf8'));
        return typeof payload.exp === 'number' ? payload.exp : undefined;
    } catch {
        return undefined;
    }
}
