/**
 * What a scenario works with: a context (the syncd under test, the way in, the RxDB version) that
 * makes clients (an RxDB database with one collection, replicated through the way in), and
 * helpers that wait for and compare states.
 *
 * pytest (tests/e2e/test_rxdb_clients.py) is on the other end of a line protocol on stdio:
 *   node → `@@rpc {"id": 1, "cmd": "collection", "schema": {...}}`   (stdout)
 *   pytest → `{"id": 1, "result": "c_0123abcd"}`                      (stdin)
 * Commands: `collection` (register a fresh collection, with an optional access rule, returns its
 * name), `restart_syncd` (stop syncd and start a new one on the same port; only for scenarios
 * marked `dedicatedServer`) and `token` ({subject, ttl_seconds, scope} → a JWT signed by the
 * issuer whose JWKS the syncd checks; only for scenarios marked `authServer`).
 */
import { createInterface } from 'node:readline';
import { isDeepStrictEqual } from 'node:util';
import { strip } from './rxdb.mjs';

export const TODO_SCHEMA = {
    title: 'todo',
    version: 0,
    primaryKey: 'id',
    type: 'object',
    properties: {
        id: { type: 'string', maxLength: 200 },
        title: { type: 'string' },
        done: { type: 'boolean' },
        n: { type: 'integer' },
        payload: {},
    },
    required: ['id', 'title'],
    additionalProperties: false,
};

// ---------------------------------------------------------------------------- rpc with pytest

let rpcCounter = 0;
const pending = new Map();
let stdin;

export function rpc(cmd, args = {}) {
    if (!stdin) {
        stdin = createInterface({ input: process.stdin });
        stdin.on('line', (line) => {
            let message;
            try {
                message = JSON.parse(line);
            } catch {
                return;
            }
            const settle = pending.get(message.id);
            if (settle) {
                pending.delete(message.id);
                settle(message);
            }
        });
    }
    const id = ++rpcCounter;
    return new Promise((resolve, reject) => {
        pending.set(id, (message) => (message.error ? reject(new Error(`rpc ${cmd}: ${message.error}`)) : resolve(message.result)));
        process.stdout.write(`@@rpc ${JSON.stringify({ id, cmd, ...args })}\n`);
    });
}

export function closeRpc() {
    stdin?.close();
}

// ---------------------------------------------------------------------------- helpers

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Retry `check` (which throws while not yet true) until it passes or `timeout` ms passed. */
export async function eventually(check, { timeout = 30_000, interval = 50, what = 'condition' } = {}) {
    const deadline = Date.now() + timeout;
    let lastError;
    for (;;) {
        try {
            return await check();
        } catch (err) {
            lastError = err;
        }
        if (Date.now() > deadline) {
            const reason = lastError instanceof Error ? lastError.message : String(lastError);
            throw new Error(`timed out after ${timeout} ms waiting for ${what}: ${reason}`);
        }
        await sleep(interval);
    }
}

/** Compare two `{id: doc}` maps; the error names the first differing ids, not a 10,000-line diff. */
export function assertSameDocs(expected, actual, label) {
    const problems = [];
    for (const id of Object.keys(expected)) {
        if (!(id in actual)) {
            problems.push(`missing ${JSON.stringify(id)}`);
        } else if (!isDeepStrictEqual(expected[id], actual[id])) {
            problems.push(`differs ${JSON.stringify(id)}: expected ${clip(expected[id])}, got ${clip(actual[id])}`);
        }
    }
    for (const id of Object.keys(actual)) {
        if (!(id in expected)) {
            problems.push(`unexpected ${JSON.stringify(id)}: ${clip(actual[id])}`);
        }
    }
    if (problems.length) {
        const count = problems.length;
        throw new Error(`${label}: ${count} difference(s) (expected ${Object.keys(expected).length} docs, ` +
            `got ${Object.keys(actual).length}): ${problems.slice(0, 5).join('; ')}${count > 5 ? '; …' : ''}`);
    }
}

export function assert(condition, message) {
    if (!condition) {
        throw new Error(message);
    }
}

function clip(value) {
    const text = JSON.stringify(value);
    return text && text.length > 200 ? `${text.slice(0, 200)}…(${text.length} chars)` : text;
}

/** Deterministic pseudo-random numbers (mulberry32), so a failing run can be replayed. */
export function seededRandom(seed) {
    let state = seed >>> 0;
    return () => {
        state = (state + 0x6d2b79f5) >>> 0;
        let t = state;
        t = Math.imul(t ^ (t >>> 15), t | 1);
        t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
        return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
}

export function percentile(values, p) {
    const sorted = [...values].sort((a, b) => a - b);
    return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

// ---------------------------------------------------------------------------- context and clients

export class Context {
    constructor({ way, rx, syncdUrl, scenario }) {
        this.way = way;
        this.rx = rx;
        this.syncdUrl = syncdUrl;
        this.scenario = scenario;
        this.clients = [];
        this.runId = `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`;
    }

    log(...parts) {
        console.log(`[${this.scenario}]`, ...parts);
    }

    /** A measurement, printed for the pytest log (and for people reading CI output). */
    metric(name, value, unit = '') {
        console.log(`@@metric ${JSON.stringify({ scenario: this.scenario, way: this.way.name, rxdb: this.rx.installed, name, value, unit })}`);
    }

    /** A fresh, empty collection in syncd (registered by pytest); returns its name. */
    async collection(schema = TODO_SCHEMA, { access } = {}) {
        return rpc('collection', access ? { schema, access } : { schema });
    }

    /** A JWT for `subject` that syncd accepts (scenarios marked authServer). */
    async token(subject, { ttl = 300, scope = 'read write', claims } = {}) {
        return rpc('token', claims ? { subject, ttl_seconds: ttl, scope, claims } : { subject, ttl_seconds: ttl, scope });
    }

    /**
     * A token function as apps give the clients: `({refresh}) → token`. The first token lives
     * `firstTtl` seconds, every refreshed one `ttl`; `calls` records each call's `refresh`.
     * `claims` are extra claims of every token (e.g. `{regions: ['north']}`); `source.setClaims()`
     * changes them for the tokens made after it (a revocation takes effect at the next refresh).
     */
    tokenSource(subject, { firstTtl = 300, ttl = 300, scope = 'read write', claims } = {}) {
        let current;
        let currentClaims = claims;
        const calls = [];
        const source = async ({ refresh = false } = {}) => {
            calls.push(Boolean(refresh));
            if (!current || refresh) {
                current = await this.token(subject, { ttl: current ? ttl : firstTtl, scope, claims: currentClaims });
            }
            return current;
        };
        source.setClaims = (next) => {
            currentClaims = next;
        };
        source.subject = subject;
        source.calls = calls;
        source.refreshes = () => calls.filter(Boolean).length;
        return source;
    }

    /** Stop syncd and start a new one on the same port (scenarios marked dedicatedServer). */
    async restartSyncd() {
        return rpc('restart_syncd');
    }

    /**
     * An RxDB client (its own in-memory database) for `collectionName`, not yet replicating; a
     * `schema` with a version > 0 needs `migrationStrategies`, as in an app.
     */
    async client(name, collectionName, { schema = TODO_SCHEMA, resolveConflict, migrationStrategies, validate = false } = {}) {
        const client = new Client(this, name, collectionName, schema, resolveConflict, migrationStrategies);
        client.validate = validate;
        await client.open();
        this.clients.push(client);
        return client;
    }

    /**
     * Every document syncd has for the collection, tombstones included, pulled page by page (in
     * the partition of `token`, a string or a token function, when syncd checks credentials).
     */
    async serverDocuments(collectionName, { token, filter } = {}) {
        const bearer = typeof token === 'function' ? await token({ refresh: false }) : token;
        const headers = bearer ? { authorization: `Bearer ${bearer}` } : {};
        const endpoint = `${this.syncdUrl}/api/v1/sync/${encodeURIComponent(collectionName)}`;
        const all = {};
        let checkpoint = null;
        for (;;) {
            let query = checkpoint ? `&checkpoint=${encodeURIComponent(JSON.stringify(checkpoint))}` : '';
            if (filter) {
                query += `&filter=${encodeURIComponent(JSON.stringify(filter))}`;
            }
            const response = await fetch(`${endpoint}?limit=1000${query}`, { headers });
            if (!response.ok) {
                throw new Error(`pulling ${collectionName} from syncd: ${response.status} ${await response.text()}`);
            }
            const page = await response.json();
            for (const doc of page.documents) {
                all[doc.id] = doc;
            }
            if (page.documents.length < 1000) {
                return all;
            }
            checkpoint = page.checkpoint;
        }
    }

    /** The live (not deleted) documents syncd has, in the shape clients hold them. */
    async serverState(collectionName, { token } = {}) {
        const live = {};
        for (const [id, doc] of Object.entries(await this.serverDocuments(collectionName, { token }))) {
            if (!doc._deleted) {
                const { _deleted, ...rest } = doc;
                live[id] = rest;
            }
        }
        return live;
    }

    /** Wait until every client and syncd hold the same live documents; returns that state. */
    async converged(collectionName, clients, { timeout = 60_000, expectCount, token } = {}) {
        return eventually(async () => {
            const server = await this.serverState(collectionName, { token });
            if (expectCount !== undefined) {
                assert(Object.keys(server).length === expectCount,
                    `syncd has ${Object.keys(server).length} live docs, expected ${expectCount}`);
            }
            for (const client of clients) {
                assertSameDocs(server, await client.state(), `${client.name} vs syncd`);
            }
            return server;
        }, { timeout, interval: 100, what: `${clients.map((c) => c.name).join(', ')} and syncd to converge` });
    }

    async closeAll() {
        for (const client of this.clients) {
            await client.close().catch((err) => this.log(`closing ${client.name}: ${err.message}`));
        }
    }
}

export class Client {
    constructor(ctx, name, collectionName, schema, resolveConflict, migrationStrategies) {
        this.ctx = ctx;
        this.migrationStrategies = migrationStrategies;
        this.name = name;
        this.collectionName = collectionName;
        this.schema = schema;
        this.resolveConflict = resolveConflict;
        this.identifier = `e2e-${ctx.runId}-${name}`;
        this.replication = undefined;
        this.errors = [];
        this.conflictsResolved = 0;
    }

    async open() {
        this.db = await this.ctx.rx.createDatabase(`${this.name}${this.ctx.runId}`.toLowerCase().replace(/[^a-z0-9]/g, ''),
            { validate: Boolean(this.validate) });
        const definition = { schema: this.schema };
        if (this.migrationStrategies) {
            definition.migrationStrategies = this.migrationStrategies;
        }
        if (this.resolveConflict) {
            definition.conflictHandler = this.ctx.rx.conflictHandler(async (input) => {
                this.conflictsResolved += 1;
                return this.resolveConflict(input);
            });
        }
        // the RxDB collection has syncd's name: RxDB's websocket client sends its own name
        const collections = await this.db.addCollections({ [this.collectionName]: definition });
        this.collection = collections[this.collectionName];
    }

    /** Start replicating through the context's way in; the same identifier resumes. */
    async start(options = {}) {
        if (this.replication && !this.replication.state.isStopped()) {
            throw new Error(`${this.name} is already replicating`);
        }
        const replication = await this.ctx.way.replicate({
            rx: this.ctx.rx,
            collection: this.collection,
            collectionName: this.collectionName,
            syncdUrl: this.ctx.syncdUrl,
            identifier: options.identifier ?? this.identifier,
            live: options.live ?? true,
            batchSize: options.batchSize,
            pullBatchSize: options.pullBatchSize,
            pushBatchSize: options.pushBatchSize,
            retryTime: options.retryTime ?? 300,
            reconnect: options.reconnect ?? { initialDelay: 100, maxDelay: 1000 },
            token: options.token,
            filter: options.filter,
        });
        replication.received = 0;
        replication.state.received$.subscribe((doc) => {
            replication.received += 1;
            if (process.env.E2E_DEBUG_FRAMES) {
                console.log(`[received ${this.name}] ${JSON.stringify(doc.id)} n=${doc.n}`);
            }
        });
        if (process.env.E2E_DEBUG_FRAMES && replication.state.conflict$) {
            replication.state.conflict$.subscribe((c) => console.log(`[conflict ${this.name}] ${JSON.stringify(c.input?.newDocumentState?.n)} vs master ${JSON.stringify(c.input?.realMasterState?.n)} -> ${JSON.stringify(c.output?.n ?? c.output)}`));
        }
        replication.state.error$.subscribe((err) => {
            const inner = err?.parameters?.errors?.[0]?.message;
            this.errors.push({ code: err?.code, message: inner ?? err?.message, at: Date.now() });
        });
        this.replication = replication;
        return replication;
    }

    /** Go offline: cancel the replication (the local checkpoint stays; start() resumes). */
    async stop() {
        if (this.replication) {
            await this.replication.state.cancel();
        }
    }

    async awaitInSync(timeout = 60_000) {
        const state = this.replication.state;
        await withTimeout(state.awaitInitialReplication().then(() => state.awaitInSync()), timeout,
            `${this.name}: replication in sync`);
    }

    async whenLive(timeout = 15_000) {
        await eventually(() => assert(this.replication.isLive(), 'live channel not connected'),
            { timeout, interval: 20, what: `${this.name}'s live channel` });
    }

    /** `{id: doc}` of the live documents, without RxDB's bookkeeping fields. */
    async state() {
        const docs = await this.collection.find().exec();
        const out = {};
        for (const doc of docs) {
            const { _deleted, ...data } = strip(doc.toJSON(true));
            out[data.id] = data;
        }
        return out;
    }

    /** Resolves with the document data once `id` exists locally (and satisfies `predicate`). */
    waitForDoc(id, predicate = () => true, timeout = 15_000) {
        return new Promise((resolve, reject) => {
            let subscription;
            const timer = setTimeout(() => {
                subscription?.unsubscribe();
                reject(new Error(`${this.name}: ${JSON.stringify(id)} did not arrive within ${timeout} ms`));
            }, timeout);
            subscription = this.collection.findOne(id).$.subscribe((doc) => {
                if (doc && predicate(doc.toJSON())) {
                    clearTimeout(timer);
                    queueMicrotask(() => subscription?.unsubscribe());
                    resolve(doc.toJSON());
                }
            });
        });
    }

    /** Errors RxDB reported, minus those matching `allowed` (a predicate on {code, message}). */
    unexpectedErrors(allowed = () => false) {
        return this.errors.filter((e) => !allowed(e));
    }

    async close() {
        await this.stop().catch(() => undefined);
        await this.ctx.rx.closeDatabase(this.db);
    }
}

export async function withTimeout(promise, ms, what) {
    let timer;
    try {
        return await Promise.race([
            promise,
            new Promise((_, reject) => {
                timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
            }),
        ]);
    } finally {
        clearTimeout(timer);
    }
}
