// replicateSyncd with real RxDB (memory storage) and a fake syncd behind a fake fetch.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createRxDatabase } from 'rxdb';
import { getRxStorageMemory } from 'rxdb/plugins/storage-memory';
import { replicateSyncd, SyncdError } from '../dist/index.js';

const schema = {
    version: 0,
    primaryKey: 'id',
    type: 'object',
    properties: { id: { type: 'string', maxLength: 100 }, title: { type: 'string' } },
    required: ['id'],
};

let counter = 0;
async function collection() {
    const db = await createRxDatabase({ name: `helpertest${counter++}`, storage: getRxStorageMemory(), multiInstance: false });
    await db.addCollections({ todos: { schema } });
    return db.todos;
}

function json(status, body) {
    return { ok: status >= 200 && status < 300, status, text: async () => JSON.stringify(body) };
}

/** A fake syncd: records requests; `answer(request)` returns a response (default: empty pages). */
function fakeFetch(answer) {
    const requests = [];
    const fetch = async (url, init) => {
        const request = { url, method: init.method, headers: init.headers, body: init.body ? JSON.parse(init.body) : undefined };
        requests.push(request);
        return answer(request, requests) ?? (request.method === 'GET'
            ? json(200, { documents: [], checkpoint: null })
            : json(200, []));
    };
    return { fetch, requests };
}

test('pull: checkpoints go back JSON- and URL-encoded, the page comes back unchanged', async () => {
    const col = await collection();
    const checkpoint = { id: 'e.1&x=%', lwt: 9007199254740991 };
    const { fetch, requests } = fakeFetch((request, all) => {
        if (request.method === 'GET' && all.filter((r) => r.method === 'GET').length === 1) {
            return json(200, { documents: [{ id: 'a', title: 'A', _deleted: false }, { id: 'b', title: 'B', _deleted: false }], checkpoint });
        }
        return undefined;
    });
    const replication = replicateSyncd({ collection: col, url: 'http://syncd.test', live: false, batchSize: 2, fetch });
    await replication.awaitInitialReplication();
    const pulls = requests.filter((r) => r.method === 'GET').map((r) => new URL(r.url));
    assert.equal(pulls[0].pathname, '/api/v1/sync/todos');
    assert.equal(pulls[0].searchParams.get('checkpoint'), null);
    assert.equal(pulls[0].searchParams.get('limit'), '2');
    assert.deepEqual(JSON.parse(pulls[1].searchParams.get('checkpoint')), checkpoint);
    assert.deepEqual((await col.find().exec()).map((d) => d.id), ['a', 'b']);
    assert.equal(replication.endpoint, 'http://syncd.test/api/v1/sync/todos');
    await col.database.close();
});

test('push: rows go as JSON, conflicts come back to RxDB; a 5xx is retried', async () => {
    const col = await collection();
    let posts = 0;
    const { fetch, requests } = fakeFetch((request) => {
        if (request.method !== 'POST') {
            return undefined;
        }
        posts += 1;
        if (posts === 1) {
            return json(503, { error: { code: 'database_unavailable', message: 'retry shortly' } });
        }
        // b conflicts: the server has another state
        return json(200, [{ id: 'b', title: 'server', _deleted: false }]);
    });
    await col.bulkInsert([{ id: 'a', title: 'A' }, { id: 'b', title: 'B' }]);
    const errors = [];
    const permanent = [];
    const replication = replicateSyncd({
        collection: col, url: 'http://syncd.test', live: false, retryTime: 10, fetch,
        onPermanentError: (e) => permanent.push(e),
    });
    replication.error$.subscribe((e) => errors.push(e));
    await replication.awaitInitialReplication();
    const pushes = requests.filter((r) => r.method === 'POST');
    assert.ok(pushes.length >= 2);
    assert.equal(pushes[0].headers['content-type'], 'application/json');
    assert.deepEqual(pushes[0].body.map((row) => row.newDocumentState.id).sort(), ['a', 'b']);
    assert.equal(pushes[0].body[0].assumedMasterState, undefined);
    assert.equal(errors[0].code, 'RC_PUSH');
    assert.match(errors[0].parameters.errors[0].message, /503 database_unavailable: retry shortly/);
    assert.deepEqual(permanent, []);
    assert.equal((await col.findOne('b').exec()).title, 'server'); // default handler: master wins
    await col.database.close();
});

test('token: a function is asked before every request, and again with refresh after a 401', async () => {
    const col = await collection();
    const calls = [];
    const { fetch, requests } = fakeFetch((request) => {
        if (request.headers.authorization === 'Bearer old') {
            return json(401, { error: { code: 'unauthorized', message: 'token expired' } });
        }
        return undefined;
    });
    const replication = replicateSyncd({
        collection: col, url: 'http://syncd.test', live: false, fetch,
        token: async ({ refresh }) => {
            calls.push(refresh);
            return refresh ? 'new' : 'old';
        },
    });
    await replication.awaitInitialReplication();
    assert.deepEqual(calls, [false, true]);
    assert.deepEqual(requests.map((r) => r.headers.authorization), ['Bearer old', 'Bearer new']);
    await col.database.close();
});

test('a permanent error (404 unknown collection) is surfaced and cancels the replication', async () => {
    const col = await collection();
    const { fetch } = fakeFetch(() => json(404, {
        error: { code: 'unknown_collection', message: "collection 'todos' does not exist" },
    }));
    const seen = [];
    const replication = replicateSyncd({
        collection: col, url: 'http://syncd.test', retryTime: 10, fetch,
        WebSocket: class { close() {} },
        onPermanentError: (e) => seen.push(e),
    });
    const fromObservable = [];
    replication.permanentError$.subscribe((e) => fromObservable.push(e));
    const rxdbErrors = [];
    replication.error$.subscribe((e) => rxdbErrors.push(e));
    await new Promise((resolve) => {
        replication.canceled$.subscribe((c) => c && resolve());
    });
    assert.equal(seen.length, 1);
    assert.ok(seen[0] instanceof SyncdError);
    assert.equal(seen[0].status, 404);
    assert.equal(seen[0].code, 'unknown_collection');
    assert.equal(seen[0].permanent, true);
    assert.deepEqual(fromObservable, seen);
    assert.equal(rxdbErrors[0].code, 'RC_PULL');
    assert.equal(rxdbErrors[0].parameters.errors[0].code, 'unknown_collection');
    assert.ok(replication.isStopped());
    await col.database.close();
});

test('every request states the schema version; a 426 outdated_schema cancels and says to update', async () => {
    const col = await collection();
    const { fetch, requests } = fakeFetch(() => json(426, {
        error: { code: 'outdated_schema', message: "schema version 0 is outdated: collection 'todos' is at version 1" },
    }));
    await col.insert({ id: 'a', title: 'A' });
    const seen = [];
    const replication = replicateSyncd({
        collection: col, url: 'http://syncd.test', retryTime: 10, fetch,
        WebSocket: class { close() {} },
        headers: { 'x-app': 'yes' },
        onPermanentError: (e) => seen.push(e),
    });
    await new Promise((resolve) => {
        replication.canceled$.subscribe((c) => c && resolve());
    });
    assert.ok(requests.length >= 1);
    for (const request of requests) {
        assert.equal(request.headers['x-syncd-schema-version'], '0');
        assert.equal(request.headers['x-app'], 'yes');
    }
    assert.equal(seen[0].status, 426);
    assert.equal(seen[0].code, 'outdated_schema');
    assert.equal(seen[0].permanent, true);
    assert.match(seen[0].message, /426 outdated_schema: schema version 0 is outdated/);
    assert.match(seen[0].message, /update it to the schema version syncd has/);
    assert.ok(replication.isStopped());
    await col.database.close();
});

test('filter: every pull, push and stream carries it; a 400 invalid_filter is permanent', async () => {
    const col = await collection();
    try {
        const filter = { listId: { $in: ['l1', 'l&2'] } };
        const { fetch, requests } = fakeFetch((request, all) => {
            if (request.method === 'GET' && all.filter((r) => r.method === 'GET').length === 1) {
                return json(200, { documents: [{ id: 'a', title: 'A', _deleted: false }], checkpoint: { id: 'e.1~x', lwt: 1 } });
            }
            return undefined;
        });
        await col.insert({ id: 'b', title: 'B' });
        const once = replicateSyncd({ collection: col, url: 'http://syncd.test', batchSize: 1, live: false, fetch, filter });
        await once.awaitInitialReplication();
        const gets = requests.filter((r) => r.method === 'GET').map((r) => new URL(r.url));
        const posts = requests.filter((r) => r.method === 'POST').map((r) => new URL(r.url));
        assert.ok(gets.length >= 2 && posts.length >= 1, `${gets.length} pulls, ${posts.length} pushes`);
        for (const url of [...gets, ...posts]) {
            assert.equal(url.pathname, '/api/v1/sync/todos');
            assert.deepEqual(JSON.parse(url.searchParams.get('filter')), filter);
        }
        assert.deepEqual(JSON.parse(gets[1].searchParams.get('checkpoint')), { id: 'e.1~x', lwt: 1 });

        // live: the stream's URL carries it too
        const sockets = [];
        const live = replicateSyncd({
            collection: col, url: 'http://syncd.test', fetch, filter, replicationIdentifier: 'live',
            WebSocket: class {
                constructor(url) {
                    sockets.push(url);
                }
                close() {}
            },
        });
        await live.awaitInitialReplication();
        for (let i = 0; i < 100 && sockets.length === 0; i++) {
            await new Promise((resolve) => setTimeout(resolve, 5));
        }
        assert.equal(sockets.length, 1);
        assert.deepEqual(JSON.parse(new URL(sockets[0]).searchParams.get('filter')), filter);
        await live.cancel();

        // syncd refuses the filter: permanent, surfaced, canceled
        const { fetch: refusing } = fakeFetch(() => json(400, {
            error: { code: 'invalid_filter', message: "filters on 'todos' may use listId with $eq or $in" },
        }));
        const seen = [];
        const refused = replicateSyncd({
            collection: col, url: 'http://syncd.test', retryTime: 5, fetch: refusing, WebSocket: class { close() {} },
            replicationIdentifier: 'other', filter: { title: 'A' }, onPermanentError: (e) => seen.push(e),
        });
        await new Promise((resolve) => {
            refused.canceled$.subscribe((c) => c && resolve());
        });
        assert.equal(seen[0].status, 400);
        assert.equal(seen[0].code, 'invalid_filter');
        assert.throws(() => replicateSyncd({ collection: col, url: 'http://syncd.test', filter: 'listId=l1', live: false, fetch }),
            /`filter` must be a selector object/);
    } finally {
        await col.database.close();
    }
});

test('cancelOnPermanentError: false keeps retrying and reports every failure', async () => {
    const col = await collection();
    let gets = 0;
    const { fetch } = fakeFetch((request) => {
        if (request.method === 'GET' && ++gets <= 3) {
            return json(403, { error: { code: 'forbidden', message: 'no access' } });
        }
        return undefined;
    });
    const seen = [];
    const replication = replicateSyncd({
        collection: col, url: 'http://syncd.test', live: false, retryTime: 5, fetch,
        cancelOnPermanentError: false, onPermanentError: (e) => seen.push(e.status),
    });
    await replication.awaitInitialReplication();
    assert.deepEqual(seen, [403, 403, 403]);
    await col.database.close();
});

test('live replication in a runtime without WebSocket says what to pass', async (t) => {
    if (typeof globalThis.WebSocket === 'function') {
        t.skip('this Node has a global WebSocket');
        return;
    }
    const col = await collection();
    assert.throws(
        () => replicateSyncd({ collection: col, url: 'http://syncd.test', fetch: fakeFetch(() => undefined).fetch }),
        /pass `WebSocket`/
    );
    await col.database.close();
});
