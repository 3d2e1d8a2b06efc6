// Against a real syncd on 127.0.0.1 (embedded PostgreSQL in a temporary data directory), started
// like tests/support.py does. Needs syncd's Python: SYNCD_PYTHON, or the repository's .venv.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { addRxPlugin, createRxDatabase } from 'rxdb';
import { RxDBMigrationSchemaPlugin } from 'rxdb/plugins/migration-schema';
import { getRxStorageMemory } from 'rxdb/plugins/storage-memory';
import WebSocket from 'ws';
import { replicateSyncd } from '../dist/index.js';

const here = fileURLToPath(new URL('.', import.meta.url));
const python = process.env.SYNCD_PYTHON ?? resolve(here, '../../../.venv/bin/python');
const available = existsSync(python);

const schema = {
    title: 'todo', version: 0, primaryKey: 'id', type: 'object',
    properties: { id: { type: 'string', maxLength: 100 }, title: { type: 'string' }, n: { type: 'integer' } },
    required: ['id', 'title'], additionalProperties: false,
};
// what the app's RxDB has: `title` not required, so a push can violate syncd's copy of the schema
const clientSchema = { ...schema, required: ['id'] };

let server;
let dataDir;
let url;

function freePort() {
    return new Promise((done, fail) => {
        const probe = createServer();
        probe.once('error', fail);
        probe.listen(0, '127.0.0.1', () => {
            const { port } = probe.address();
            probe.close(() => done(port));
        });
    });
}

before(async () => {
    if (!available) {
        return;
    }
    dataDir = mkdtempSync(join(tmpdir(), 'syncd-rxdb-test-'));
    const env = { ...process.env, SYNCD_DATA_DIR: dataDir, SYNCD_LOG_LEVEL: process.env.SYNCD_LOG_LEVEL ?? 'warning' };
    delete env.SYNCD_DATABASE_URL;
    const port = await freePort();
    url = `http://127.0.0.1:${port}`;
    server = spawn(python, ['-m', 'syncd', 'serve', '--host', '127.0.0.1', '--port', String(port)], { env, stdio: 'inherit' });
    const deadline = Date.now() + 60_000;
    for (;;) {
        if (server.exitCode !== null) {
            throw new Error(`syncd exited early with ${server.exitCode}`);
        }
        try {
            if ((await fetch(`${url}/healthz`)).ok) {
                break;
            }
        } catch {
            // not up yet
        }
        if (Date.now() > deadline) {
            throw new Error('syncd did not become ready in 60 s');
        }
        await new Promise((r) => setTimeout(r, 100));
    }
    const schemaFile = join(dataDir, 'todos.schema.json');
    writeFileSync(schemaFile, JSON.stringify(schema));
    const added = spawnSync(python, ['-m', 'syncd', 'collections', 'add', 'todos', '--schema', schemaFile], { env, encoding: 'utf8' });
    assert.equal(added.status, 0, added.stderr);
    // the same collection after a schema change: version 1
    const v1File = join(dataDir, 'todos-v1.schema.json');
    writeFileSync(v1File, JSON.stringify({ ...schema, version: 1 }));
    const addedV1 = spawnSync(python, ['-m', 'syncd', 'collections', 'add', 'todosv1', '--schema', v1File], { env, encoding: 'utf8' });
    assert.equal(addedV1.status, 0, addedV1.stderr);
});

after(async () => {
    if (server && server.exitCode === null) {
        const exited = new Promise((r) => server.once('exit', r));
        server.kill('SIGTERM');
        let timer;
        await Promise.race([exited, new Promise((r) => { timer = setTimeout(r, 20_000); })]);
        clearTimeout(timer);
        if (server.exitCode === null) {
            server.kill('SIGKILL');
        }
    }
    if (dataDir) {
        rmSync(dataDir, { recursive: true, force: true });
    }
});

// apps whose schema has versions > 0 (with migrationStrategies) load it
addRxPlugin(RxDBMigrationSchemaPlugin);

let counter = 0;
async function client(collectionSchema = clientSchema, migrationStrategies = undefined) {
    const db = await createRxDatabase({ name: `livetest${counter++}`, storage: getRxStorageMemory(), multiInstance: false });
    await db.addCollections({ todos: { schema: collectionSchema, migrationStrategies } });
    return db;
}

function first(observable, predicate = () => true) {
    return new Promise((done) => {
        const sub = observable.subscribe((value) => {
            if (predicate(value)) {
                queueMicrotask(() => sub.unsubscribe());
                done(value);
            }
        });
    });
}

test('two clients: push, pull and the live stream through a real syncd', { timeout: 60_000, skip: !available && `no syncd Python at ${python} (set SYNCD_PYTHON)` }, async () => {
    const a = await client();
    const b = await client();
    const ra = replicateSyncd({ collection: a.todos, url, WebSocket, retryTime: 200, replicationIdentifier: 'live-a' });
    await a.todos.insert({ id: 'first', title: 'before b started', n: 1 });
    await ra.awaitInSync();
    const rb = replicateSyncd({ collection: b.todos, url, WebSocket, retryTime: 200, replicationIdentifier: 'live-b' });
    await rb.awaitInitialReplication();
    assert.equal((await b.todos.findOne('first').exec())?.title, 'before b started');

    await first(rb.streamConnected$, Boolean);
    const arrived = first(b.todos.findOne('second').$, Boolean);
    await a.todos.insert({ id: 'second', title: 'through the stream', n: 2 });
    assert.equal((await arrived).title, 'through the stream');

    const removed = first(b.todos.findOne('first').$, (doc) => doc === null);
    await (await a.todos.findOne('first').exec()).remove();
    await removed;
    await a.close();
    await b.close();
});

test('unknown collection: a permanent 404, surfaced, replication canceled', { timeout: 60_000, skip: !available }, async () => {
    const db = await client();
    const errors = [];
    const replication = replicateSyncd({
        collection: db.todos, url, collectionName: 'no_such_collection', WebSocket, retryTime: 50,
        onPermanentError: (e) => errors.push(e),
    });
    await first(replication.canceled$, Boolean);
    assert.ok(errors.length >= 1);
    assert.equal(errors[0].status ?? errors[0].closeCode - 4000, 404);
    assert.ok(errors.some((e) => e.code === 'unknown_collection' || e.closeCode === 4404), JSON.stringify(errors));
    await db.close();
});

test('a document syncd refuses (422 schema_violation) is a permanent push error with details', { timeout: 60_000, skip: !available }, async () => {
    const db = await client();
    await db.todos.insert({ id: 'no-title' }); // the server's schema requires a title
    const errors = [];
    const replication = replicateSyncd({
        collection: db.todos, url, WebSocket, retryTime: 50, onPermanentError: (e) => errors.push(e),
    });
    await first(replication.canceled$, Boolean);
    const push = errors.find((e) => e.source === 'push');
    assert.ok(push, JSON.stringify(errors));
    assert.equal(push.status, 422);
    assert.equal(push.code, 'schema_violation');
    assert.match(JSON.stringify(push.details), /no-title/);
    await db.close();
});

test('an app older than the collection\'s schema version is told to update; the updated app syncs', { timeout: 60_000, skip: !available }, async () => {
    const old = await client(); // schema version 0; syncd's todosv1 is at version 1
    await old.todos.insert({ id: 'from-old', title: 'old shape' });
    const errors = [];
    const outdated = replicateSyncd({
        collection: old.todos, url, collectionName: 'todosv1', WebSocket, retryTime: 50,
        onPermanentError: (e) => errors.push(e),
    });
    await first(outdated.canceled$, Boolean);
    assert.ok(errors.length >= 1);
    for (const error of errors) {
        assert.equal(error.code, 'outdated_schema', JSON.stringify(errors));
        assert.equal(error.status, 426);
        assert.match(error.message, /schema version 0 is outdated: collection 'todosv1' is at version 1/);
    }

    const updated = await client({ ...clientSchema, version: 1 }, { 1: (doc) => doc });
    const replication = replicateSyncd({
        collection: updated.todos, url, collectionName: 'todosv1', WebSocket, retryTime: 50,
        replicationIdentifier: 'live-v1',
    });
    await updated.todos.insert({ id: 'from-updated', title: 'new shape' });
    await replication.awaitInSync();
    await first(replication.streamConnected$, Boolean);
    const pulled = await (await fetch(`${url}/api/v1/sync/todosv1`)).json();
    assert.deepEqual(pulled.documents.map((d) => d.id), ['from-updated']); // nothing of the old app
    assert.ok(!replication.isStopped());
    await old.close();
    await updated.close();
});
