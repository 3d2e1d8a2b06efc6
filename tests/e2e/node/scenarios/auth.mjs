/**
 * Scenarios against a syncd that checks credentials (SYNCD_AUTH_MODE=jwt). pytest gives them a
 * syncd of their own (`authServer`), with a JWKS from tests/authworld.py, and answers the rpc
 * `token` ({subject, ttl_seconds, scope} → a signed JWT; ctx.token / ctx.tokenSource). Every way
 * in takes `client.start({ token })`, a token function `({refresh}) → token`:
 *   native          the helper's token option: called before every request and reconnect, with
 *                   {refresh: true} after a 401 or a stream closed with 4401
 *   rxdb-server     Authorization header; on unauthorized$ the way sets replicationState.headers
 *                   to a fresh token (lib/ways/rxdb-server.mjs)
 *   rxdb-websocket  the `auth` message; the client has no 401 signal, so the way refreshes the
 *                   token ahead of its expiry (lib/ways/rxdb-websocket.mjs)
 *
 * - auth_refresh_on_401: tokens that expire mid-replication; both clients keep writing past the
 *   expiry; the clients refresh, replication resumes, and everything written arrives everywhere.
 * - auth_403_cancels: a token without the write scope pushes: 403, surfaced to the app
 *   (forbidden$ / permanentError$), the replication is canceled rather than retried forever, and
 *   nothing is written. Not for rxdb-websocket: its only answer to a failed write is
 *   `result: null`, which it retries every retryTime, forever (docs/rxdb-compat.md, "Errors").
 * - auth_partition_isolation: two users replicate one partitioned collection, with the same ids
 *   on both sides; each ends with only their own documents, and syncd holds both sets apart.
 * - outdated_schema (every way, no auth needed): the collection is at schema version 1. A client
 *   at version 0 gets the outdated answer its library understands, and nothing of it is written:
 *     native          426 outdated_schema → permanentError$ (onPermanentError), canceled
 *     rxdb-server     426 → outdatedClient$, canceled
 *     rxdb-websocket  no outdated signal exists: every request of its socket (URL
 *                     ?schemaVersion=0) fails with outdated_schema; its write is retried
 *                     (RC_PUSH_NO_AR on error$), its pulls get empty pages, it is not canceled
 *   Then two clients at version 1 (with a migration strategy) replicate with it and converge.
 */
import { TODO_SCHEMA, assert, assertSameDocs, eventually, sleep } from '../lib/harness.mjs';

export const OWNED_SCHEMA = {
    ...TODO_SCHEMA,
    properties: { ...TODO_SCHEMA.properties, owner: { type: 'string' } },
};
/** Rows belong to the token's `sub`; writes need the `write` scope and the caller as owner. */
export const OWNED_ACCESS = { partition_claim: 'sub', owner_field: 'owner', write: { scope: ['write'] } };

const WEBSOCKET_NO_ERROR_CHANNEL = 'replicateWithWebsocketServer has no error channel for a write: '
    + 'syncd answers a 403 with `result: null`, which the client retries every retryTime forever '
    + '(RC_PUSH_NO_AR); it can neither tell the app nor cancel';

/** Both clients start with tokens that expire in ~3 s and keep writing for ~6 s. */
export async function authRefreshOn401(ctx) {
    const name = await ctx.collection(TODO_SCHEMA); // no rule: shared by authenticated callers
    const sources = { a: ctx.tokenSource('alice', { firstTtl: 3, ttl: 120 }), b: ctx.tokenSource('bob', { firstTtl: 3, ttl: 120 }) };
    const clients = { a: await ctx.client('a', name), b: await ctx.client('b', name) };
    const replications = {};
    for (const tag of ['a', 'b']) {
        replications[tag] = await clients[tag].start({ token: sources[tag] });
    }
    await Promise.all(Object.values(clients).map((c) => c.awaitInSync()));

    const expected = {};
    const started = Date.now();
    let i = 0;
    while (Date.now() - started < 6000) {
        for (const tag of ['a', 'b']) {
            const doc = { id: `${tag}-${i}`, title: `${tag} ${i}`, n: i };
            await clients[tag].collection.insert(doc);
            expected[doc.id] = doc;
            if (i >= 5) { // and edit one of its own documents of a second ago
                const old = await clients[tag].collection.findOne(`${tag}-${i - 5}`).exec();
                await old.incrementalPatch({ done: true });
                expected[old.id] = { ...expected[old.id], done: true };
            }
        }
        i += 1;
        await sleep(200);
    }
    ctx.log(`${Object.keys(expected).length} documents written over ${Date.now() - started} ms`);
    const state = await ctx.converged(name, Object.values(clients), { timeout: 30_000, token: await ctx.token('auditor') });
    assertSameDocs(expected, state, 'syncd vs everything written');
    for (const tag of ['a', 'b']) {
        const source = sources[tag];
        const signals = replications[tag].signals;
        ctx.log(`${tag}: token calls ${source.calls.length}, refreshes ${source.refreshes()}, unauthorized$ ${signals.unauthorized}`);
        assert(source.refreshes() >= 1, `${tag}: the token was never refreshed (calls ${JSON.stringify(source.calls.slice(-10))})`);
        if (ctx.way.name === 'rxdb-server') {
            assert(signals.unauthorized >= 1, `${tag}: unauthorized$ never emitted`);
        }
        assert(signals.permanentErrors.length === 0, `${tag}: permanent errors ${JSON.stringify(signals.permanentErrors)}`);
        assert(!replications[tag].state.isStopped(), `${tag}: the replication stopped`);
    }
    ctx.metric('auth_refreshes', sources.a.refreshes() + sources.b.refreshes(), 'calls');
}

/** A reader (scope "read") pushes: 403 → surfaced, canceled, nothing written. */
export async function auth403Cancels(ctx) {
    const name = await ctx.collection(OWNED_SCHEMA, { access: OWNED_ACCESS });
    const reader = ctx.tokenSource('carol', { scope: 'read' });
    const client = await ctx.client('carol', name, { schema: OWNED_SCHEMA });
    await client.collection.insert({ id: 'c1', title: 'written without the write scope', owner: 'carol' });
    const replication = await client.start({ token: reader });
    const signals = replication.signals;
    await eventually(() => assert(signals.forbidden + signals.permanentErrors.length > 0, 'no 403 surfaced yet'),
        { timeout: 15_000, what: 'the 403 to be surfaced' });
    await eventually(() => assert(replication.state.isStopped(), 'still replicating'),
        { timeout: 10_000, what: 'the replication to be canceled' });
    if (ctx.way.name === 'native') {
        const [first] = signals.permanentErrors;
        assert(first.status === 403 && first.source === 'push', `permanent error ${JSON.stringify(first)}`);
    } else {
        assert(signals.forbidden >= 1, 'forbidden$ never emitted');
    }
    const pushes = replication.stats.pushRequests;
    await client.collection.insert({ id: 'c2', title: 'after the cancel', owner: 'carol' });
    await sleep(1000);
    assert(replication.stats.pushRequests === pushes,
        `pushed again after the cancel (${pushes} → ${replication.stats.pushRequests} requests)`);
    const writer = await ctx.token('carol'); // same partition, with the write scope
    const server = await ctx.serverDocuments(name, { token: writer });
    assertSameDocs({}, server, 'syncd after a refused push');
    ctx.log(`403 surfaced (${JSON.stringify(signals)}), canceled after ${pushes} push request(s)`);
}

/** Alice and Bob replicate one partitioned collection, with the same ids: neither sees the other. */
export async function authPartitionIsolation(ctx) {
    const name = await ctx.collection(OWNED_SCHEMA, { access: OWNED_ACCESS });
    const users = ['alice', 'bob'];
    const sources = {};
    const clients = {};
    const expected = {};
    for (const user of users) {
        sources[user] = ctx.tokenSource(user);
        clients[user] = await ctx.client(user, name, { schema: OWNED_SCHEMA });
        expected[user] = {};
        for (let i = 0; i < 5; i++) { // the same ids on both sides, plus ids of their own
            for (const id of [`shared-${i}`, `${user}-${i}`]) {
                const doc = { id, title: `${user}'s ${id}`, n: i, owner: user };
                await clients[user].collection.insert(doc);
                expected[user][id] = doc;
            }
        }
    }
    for (const user of users) {
        await clients[user].start({ token: sources[user] });
    }
    await Promise.all(users.map((user) => clients[user].awaitInSync()));
    // live writes: new docs with a common id, and edits of the shared ids
    for (const user of users) {
        const doc = { id: 'shared-live', title: `${user} live`, n: 99, owner: user };
        await clients[user].collection.insert(doc);
        expected[user][doc.id] = doc;
        const shared = await clients[user].collection.findOne('shared-0').exec();
        await shared.incrementalPatch({ done: true, title: `${user} edited` });
        expected[user]['shared-0'] = { ...expected[user]['shared-0'], done: true, title: `${user} edited` };
    }
    for (const user of users) {
        const server = await ctx.converged(name, [clients[user]], { timeout: 30_000, token: sources[user] });
        assertSameDocs(expected[user], server, `${user}'s partition in syncd`);
    }
    await sleep(500); // nothing of the other user arrives late
    for (const user of users) {
        assertSameDocs(expected[user], await clients[user].state(), `${user}'s client`);
        assert(clients[user].unexpectedErrors().length === 0, `${user}: errors ${JSON.stringify(clients[user].errors.slice(-3))}`);
    }
}

/**
 * The collection is registered at schema version 1; a client at version 0 is told it is outdated
 * (as far as its library can be told), clients at version 1 replicate.
 */
export async function outdatedSchema(ctx) {
    const v1 = { ...TODO_SCHEMA, version: 1 };
    const name = await ctx.collection(v1);
    const old = await ctx.client('old', name); // TODO_SCHEMA is version 0
    const oldDoc = { id: 'x', title: 'from an outdated client' };
    await old.collection.insert(oldDoc);
    const replication = await old.start();
    const signals = replication.signals;
    if (ctx.way.name === 'rxdb-websocket') {
        await eventually(() => assert(old.errors.some((e) => e.code === 'RC_PUSH_NO_AR'),
            `no failed write on error$ yet: ${JSON.stringify(old.errors.slice(-3))}`),
        { timeout: 15_000, what: 'the refused write on error$' });
        assert(!replication.state.isStopped(), 'canceled, though this client has no outdated signal');
    } else {
        await eventually(() => assert(signals.outdated + signals.permanentErrors.length > 0, 'not told yet'),
            { timeout: 15_000, what: 'the outdated answer to be surfaced' });
        await eventually(() => assert(replication.state.isStopped(), 'still replicating'),
            { timeout: 10_000, what: 'the replication to be canceled' });
        if (ctx.way.name === 'native') {
            const [first] = signals.permanentErrors;
            assert(first.status === 426 && first.code === 'outdated_schema',
                `permanent error ${JSON.stringify(signals.permanentErrors)}`);
        } else {
            assert(signals.outdated >= 1, 'outdatedClient$ never emitted');
        }
    }
    assertSameDocs({}, await ctx.serverDocuments(name), 'syncd after an outdated client');

    // The updated app: version 1 with a migration strategy, as RxDB requires for a new version.
    const migrationStrategies = { 1: (doc) => doc };
    const updated = [];
    for (const tag of ['new-a', 'new-b']) {
        updated.push(await ctx.client(tag, name, { schema: v1, migrationStrategies }));
    }
    const newDoc = { id: 'y', title: 'from an updated client' };
    await updated[0].collection.insert(newDoc);
    for (const client of updated) {
        await client.start();
    }
    await Promise.all(updated.map((client) => client.awaitInSync()));
    const state = await ctx.converged(name, updated, { timeout: 30_000 });
    assertSameDocs({ y: newDoc }, state, 'syncd after the updated clients');
    for (const client of updated) {
        assert(client.unexpectedErrors().length === 0, `${client.name}: errors ${JSON.stringify(client.errors.slice(-3))}`);
    }
    // The outdated client got nothing of it (canceled, or served empty pages and no stream).
    await sleep(500);
    assertSameDocs({ x: oldDoc }, await old.state(), 'the outdated client');
}

export const authScenarios = {
    auth_refresh_on_401: { run: authRefreshOn401, authServer: true },
    auth_403_cancels: { run: auth403Cancels, authServer: true, notFor: { 'rxdb-websocket': WEBSOCKET_NO_ERROR_CHANNEL } },
    auth_partition_isolation: { run: authPartitionIsolation, authServer: true },
    outdated_schema: { run: outdatedSchema },
};
