// The live stream over a fake WebSocket: RESYNC per connection, frames, reconnects, never errors.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BehaviorSubject } from 'rxjs';
import { syncdStream } from '../dist/stream.js';

// Every RESYNC is emitted twice in a row (src/stream.ts, `resync`: RxDB drops a lone one queued
// behind stream events).
const R2 = ['RESYNC', 'RESYNC'];

class FakeSocket {
    static made = [];
    static failNext = 0;
    constructor(url, protocols) {
        if (FakeSocket.failNext > 0) {
            FakeSocket.failNext -= 1;
            throw new Error('cannot construct');
        }
        this.url = url;
        this.protocols = protocols;
        this.closedWith = undefined;
        FakeSocket.made.push(this);
    }
    close(code) {
        this.closedWith = code;
    }
    // the server side
    send(value) {
        this.onmessage?.({ data: typeof value === 'string' ? value : JSON.stringify(value) });
    }
    drop(code, reason = '') {
        this.onclose?.({ code, reason });
    }
}

async function until(check, what, timeout = 2000) {
    const deadline = Date.now() + timeout;
    while (!check()) {
        if (Date.now() > deadline) {
            throw new Error(`timed out waiting for ${what}`);
        }
        await new Promise((resolve) => setTimeout(resolve, 2));
    }
}

function open(overrides = {}) {
    FakeSocket.made = [];
    const items = [];
    const permanent = [];
    const errors = [];
    const tokenCalls = [];
    const connected$ = new BehaviorSubject(false);
    const stream$ = syncdStream({
        endpoint: 'http://h/api/v1/sync/todos',
        WebSocket: FakeSocket,
        token: ({ refresh }) => {
            tokenCalls.push(refresh);
            return `tok${tokenCalls.length}`;
        },
        backoff: { initialDelay: 10, maxDelay: 40 },
        connected$,
        onPermanentError: (err) => permanent.push(err),
        retryPermanent: false,
        ...overrides,
    });
    const subscription = stream$.subscribe({
        next: (item) => items.push(item),
        error: (err) => errors.push(err),
        complete: () => errors.push(new Error('completed')),
    });
    return { items, permanent, errors, tokenCalls, connected$, subscription };
}

test('RESYNC (twice) per connection, when syncd confirms the subscription; frames pass through', async () => {
    const s = open();
    await until(() => FakeSocket.made.length === 1, 'a socket');
    const [socket] = FakeSocket.made;
    assert.equal(socket.url, 'ws://h/api/v1/sync/todos/stream');
    assert.deepEqual(socket.protocols, ['syncd.v1', 'bearer.tok1']);
    assert.deepEqual(s.items, []);
    assert.equal(s.connected$.getValue(), false);

    socket.send('"RESYNC"');
    assert.deepEqual(s.items, [...R2]);
    assert.equal(s.connected$.getValue(), true);
    const frame = { documents: [{ id: 'a', _deleted: false }], checkpoint: { id: 'e.1', lwt: 5 } };
    socket.send(frame);
    socket.send('"RESYNC"');
    socket.send('not json');
    assert.deepEqual(s.items, [...R2, frame, ...R2, ...R2]);
    s.subscription.unsubscribe();
    assert.equal(socket.closedWith, 1000);
    assert.equal(s.connected$.getValue(), false);
    assert.deepEqual(s.errors, []);
});

test('a first frame that is not RESYNC still makes RxDB resync first', async () => {
    const s = open();
    await until(() => FakeSocket.made.length === 1, 'a socket');
    const frame = { documents: [], checkpoint: null };
    FakeSocket.made[0].send(frame);
    assert.deepEqual(s.items, [...R2, frame]);
    s.subscription.unsubscribe();
});

test('reconnects after a drop or a restart, with RESYNC again, and never errors', async () => {
    const s = open();
    await until(() => FakeSocket.made.length === 1, 'a socket');
    FakeSocket.made[0].send('"RESYNC"');
    FakeSocket.made[0].drop(1012, 'restart');
    assert.equal(s.connected$.getValue(), false);
    await until(() => FakeSocket.made.length === 2, 'a reconnect');
    FakeSocket.made[1].drop(1006); // refused before confirming: backoff grows
    await until(() => FakeSocket.made.length === 3, 'a second reconnect');
    FakeSocket.failNext = 2; // constructing the socket throws: retried too
    FakeSocket.made[2].drop(1013);
    await until(() => FakeSocket.made.length === 4, 'a reconnect after constructor failures');
    FakeSocket.made[3].send('"RESYNC"');
    assert.deepEqual(s.items, [...R2, ...R2]);
    assert.equal(s.connected$.getValue(), true);
    assert.deepEqual(s.tokenCalls, [false, false, false, false, false, false]);
    assert.deepEqual(s.errors, []);
    assert.deepEqual(s.permanent, []);
    s.subscription.unsubscribe();
});

test('4401 reconnects at once with a refreshed token', async () => {
    const s = open({ backoff: { initialDelay: 5000, maxDelay: 5000 } });
    await until(() => FakeSocket.made.length === 1, 'a socket');
    FakeSocket.made[0].send('"RESYNC"');
    FakeSocket.made[0].drop(4401, 'credentials expired; reconnect');
    await until(() => FakeSocket.made.length === 2, 'an immediate reconnect', 1000);
    assert.deepEqual(s.tokenCalls, [false, true]);
    assert.deepEqual(FakeSocket.made[1].protocols, ['syncd.v1', 'bearer.tok2']);
    FakeSocket.made[1].send('"RESYNC"');
    assert.deepEqual(s.items, [...R2, ...R2]);
    assert.deepEqual(s.permanent, []);
    s.subscription.unsubscribe();
});

test('a permanent close code is reported once and not retried', async () => {
    const s = open();
    await until(() => FakeSocket.made.length === 1, 'a socket');
    FakeSocket.made[0].drop(4404, "collection 'todos' does not exist");
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.equal(FakeSocket.made.length, 1);
    assert.equal(s.permanent.length, 1);
    const [err] = s.permanent;
    assert.equal(err.name, 'SyncdError');
    assert.equal(err.closeCode, 4404);
    assert.equal(err.status, 404);
    assert.equal(err.permanent, true);
    assert.equal(err.source, 'stream');
    assert.match(err.message, /4404: collection 'todos' does not exist/);
    assert.deepEqual(s.errors, []);
    s.subscription.unsubscribe();
});

test('the schema version goes in the URL; 4426 is a permanent outdated_schema error', async () => {
    const s = open({ schemaVersion: 2 });
    await until(() => FakeSocket.made.length === 1, 'a socket');
    assert.equal(FakeSocket.made[0].url, 'ws://h/api/v1/sync/todos/stream?schemaVersion=2');
    FakeSocket.made[0].drop(4426, "schema version 2 is outdated: collection 'todos' is at version 3");
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.equal(FakeSocket.made.length, 1); // not retried
    assert.equal(s.permanent.length, 1);
    const [err] = s.permanent;
    assert.equal(err.closeCode, 4426);
    assert.equal(err.status, 426);
    assert.equal(err.code, 'outdated_schema');
    assert.equal(err.permanent, true);
    assert.match(err.message, /4426 outdated_schema \(update the app\): schema version 2 is outdated/);
    s.subscription.unsubscribe();
});

test('the filter goes in the URL as filter=<encodeURIComponent(JSON)>, on every reconnect', async () => {
    const filter = JSON.stringify({ listId: { $in: ['l2', 'l 3'] } });
    const s = open({ schemaVersion: 0, filter });
    await until(() => FakeSocket.made.length === 1, 'a socket');
    const expected = `ws://h/api/v1/sync/todos/stream?schemaVersion=0&filter=${encodeURIComponent(filter)}`;
    assert.equal(FakeSocket.made[0].url, expected);
    FakeSocket.made[0].drop(1006);
    await until(() => FakeSocket.made.length === 2, 'a reconnect');
    assert.equal(FakeSocket.made[1].url, expected);
    s.subscription.unsubscribe();
});

test('with retryPermanent, a permanent close is reported and retried with backoff', async () => {
    const s = open({ retryPermanent: true });
    await until(() => FakeSocket.made.length === 1, 'a socket');
    FakeSocket.made[0].drop(4403, 'forbidden');
    await until(() => FakeSocket.made.length === 2, 'a retry');
    assert.equal(s.permanent.length, 1);
    s.subscription.unsubscribe();
});

test('unsubscribing stops reconnecting', async () => {
    const s = open({ backoff: { initialDelay: 30, maxDelay: 30 } });
    await until(() => FakeSocket.made.length === 1, 'a socket');
    FakeSocket.made[0].drop(1006);
    s.subscription.unsubscribe();
    await new Promise((resolve) => setTimeout(resolve, 80));
    assert.equal(FakeSocket.made.length, 1);
});

test('a token that is not a valid subprotocol goes in the query', async () => {
    const s = open({ token: 'a b' });
    await until(() => FakeSocket.made.length === 1, 'a socket');
    assert.equal(FakeSocket.made[0].url, 'ws://h/api/v1/sync/todos/stream?access_token=a%20b');
    assert.deepEqual(FakeSocket.made[0].protocols, ['syncd.v1']);
    s.subscription.unsubscribe();
});
