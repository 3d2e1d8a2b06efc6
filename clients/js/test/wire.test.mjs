// Pure rules: URLs, checkpoint encoding, which failures are permanent, backoff.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
    backoffDelay, encodeFilter, endpointUrl, isPermanentCloseCode, isPermanentStatus, pullUrl, pushUrl,
    streamTarget,
} from '../dist/core.js';

test('endpointUrl appends the native API path and encodes the collection name', () => {
    assert.equal(endpointUrl('http://127.0.0.1:8080', 'todos'), 'http://127.0.0.1:8080/api/v1/sync/todos');
    assert.equal(endpointUrl('https://h.example/', 'todos'), 'https://h.example/api/v1/sync/todos');
    assert.equal(endpointUrl('https://h.example/sync/', 'a b/c'), 'https://h.example/sync/api/v1/sync/a%20b%2Fc');
});

test('endpointUrl refuses what is not a base URL, saying why', () => {
    assert.throws(() => endpointUrl('http://h/api/v1/sync/todos', 'todos'), /base URL/);
    assert.throws(() => endpointUrl('ws://h', 'todos'), /must be http/);
    assert.throws(() => endpointUrl('http://h?x=1', 'todos'), /query/);
    assert.throws(() => endpointUrl('', 'todos'), /required/);
    assert.throws(() => endpointUrl('http://h', ''), /empty/);
});

test('the first pull has no checkpoint; later ones carry it JSON- and URL-encoded', () => {
    assert.equal(pullUrl('http://h/api/v1/sync/t', undefined, 100), 'http://h/api/v1/sync/t?limit=100');
    assert.equal(pullUrl('http://h/api/v1/sync/t', null, 5), 'http://h/api/v1/sync/t?limit=5');
    const checkpoint = { id: 'a&b=c#d%20e+f/ü😀 "q"', lwt: 9007199254740991, nested: { x: [1, null] } };
    const url = new URL(pullUrl('http://h/api/v1/sync/t', checkpoint, 7));
    assert.deepEqual([...url.searchParams.keys()], ['limit', 'checkpoint']);
    assert.equal(url.searchParams.get('limit'), '7');
    assert.deepEqual(JSON.parse(url.searchParams.get('checkpoint')), checkpoint);
    assert.ok(!url.search.includes('[object'), url.search);
});

test('the stream URL and where the token goes', () => {
    const endpoint = 'https://h/api/v1/sync/todos';
    assert.deepEqual(streamTarget(endpoint, undefined), { url: 'wss://h/api/v1/sync/todos/stream', protocols: ['syncd.v1'] });
    assert.deepEqual(streamTarget('http://h/api/v1/sync/t', 'eyJ.abc-_.sig'), {
        url: 'ws://h/api/v1/sync/t/stream', protocols: ['syncd.v1', 'bearer.eyJ.abc-_.sig'],
    });
    // not a valid subprotocol token (RFC 7230): falls back to the query parameter
    assert.deepEqual(streamTarget('http://h/api/v1/sync/t', 'a/b+c=='), {
        url: 'ws://h/api/v1/sync/t/stream?access_token=a%2Fb%2Bc%3D%3D', protocols: ['syncd.v1'],
    });
    // the app's schema version rides in the query (a browser's WebSocket cannot set headers)
    assert.deepEqual(streamTarget('http://h/api/v1/sync/t', 'eyJ.abc-_.sig', 0), {
        url: 'ws://h/api/v1/sync/t/stream?schemaVersion=0', protocols: ['syncd.v1', 'bearer.eyJ.abc-_.sig'],
    });
    assert.deepEqual(streamTarget('http://h/api/v1/sync/t', 'a/b', 3), {
        url: 'ws://h/api/v1/sync/t/stream?schemaVersion=3&access_token=a%2Fb', protocols: ['syncd.v1'],
    });
});

test('a filter goes as filter=<encodeURIComponent(JSON)> on pull, push and stream; none: no filter=', () => {
    const endpoint = 'http://h/api/v1/sync/t';
    const filter = { listId: { $in: ['l 1', 'a&b=c', 'ü#%+/'] }, region: 'north', n: 3, done: { $eq: false } };
    const encoded = encodeFilter(filter);
    assert.equal(encoded, JSON.stringify(filter));
    const expected = `filter=${encodeURIComponent(JSON.stringify(filter))}`;

    const first = pullUrl(endpoint, undefined, 10, encoded);
    assert.equal(first, `${endpoint}?limit=10&${expected}`);
    const later = new URL(pullUrl(endpoint, { id: 'e.1~abc', lwt: 5 }, 10, encoded));
    assert.deepEqual([...later.searchParams.keys()], ['limit', 'checkpoint', 'filter']);
    assert.deepEqual(JSON.parse(later.searchParams.get('filter')), filter);
    assert.deepEqual(JSON.parse(later.searchParams.get('checkpoint')), { id: 'e.1~abc', lwt: 5 });

    assert.equal(pushUrl(endpoint, encoded), `${endpoint}?${expected}`);
    assert.deepEqual(JSON.parse(new URL(pushUrl(endpoint, encoded)).searchParams.get('filter')), filter);

    const stream = streamTarget(endpoint, 'tok', 0, encoded);
    assert.equal(stream.url, `ws://h/api/v1/sync/t/stream?schemaVersion=0&${expected}`);
    assert.deepEqual(stream.protocols, ['syncd.v1', 'bearer.tok']);
    assert.deepEqual(JSON.parse(new URL(streamTarget(endpoint, 'a/b', undefined, encoded).url).searchParams.get('filter')), filter);

    // unfiltered: the URLs of before, byte for byte
    assert.equal(encodeFilter(undefined), undefined);
    assert.equal(encodeFilter(null), undefined);
    assert.equal(pullUrl(endpoint, undefined, 10, undefined), `${endpoint}?limit=10`);
    assert.equal(pushUrl(endpoint, undefined), endpoint);
    assert.equal(pushUrl(endpoint), endpoint);
    assert.equal(streamTarget(endpoint, 'tok', 0, undefined).url, 'ws://h/api/v1/sync/t/stream?schemaVersion=0');
});

test('a filter that is not a selector object is refused at once', () => {
    for (const bad of ['listId=l1', ['l1'], 5, true]) {
        assert.throws(() => encodeFilter(bad), /`filter` must be a selector object/, JSON.stringify(bad));
    }
    // an empty selector is a valid (if pointless) filter: syncd decides
    assert.equal(encodeFilter({}), '{}');
});

test('which HTTP statuses are permanent', () => {
    for (const status of [400, 403, 404, 405, 409, 410, 413, 415, 422, 426]) {
        assert.equal(isPermanentStatus(status), true, String(status));
    }
    for (const status of [200, 204, 301, 401, 408, 425, 429, 500, 502, 503, 504]) {
        assert.equal(isPermanentStatus(status), false, String(status));
    }
});

test('which close codes are permanent', () => {
    for (const code of [4400, 4403, 4404, 4413, 4422, 4426]) {
        assert.equal(isPermanentCloseCode(code), true, String(code));
    }
    for (const code of [1000, 1001, 1006, 1011, 1012, 1013, 4401, 4408, 4429, 4500, 4503, 3000]) {
        assert.equal(isPermanentCloseCode(code), false, String(code));
    }
});

test('backoff grows exponentially, is jittered within [ceiling/2, ceiling] and capped', () => {
    const options = { initialDelay: 100, maxDelay: 5000, factor: 2 };
    for (let attempt = 0; attempt < 30; attempt++) {
        const ceiling = Math.min(5000, 100 * 2 ** attempt);
        assert.equal(backoffDelay(attempt, options, () => 0), Math.round(ceiling / 2));
        assert.equal(backoffDelay(attempt, options, () => 1), ceiling);
        const random = backoffDelay(attempt, options);
        assert.ok(random >= ceiling / 2 - 1 && random <= ceiling, `${attempt}: ${random}`);
    }
    assert.equal(backoffDelay(0, {}, () => 1), 500);
    assert.equal(backoffDelay(100, {}, () => 1), 30_000);
});
