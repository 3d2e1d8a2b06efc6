import { assert, assertSameDocs } from '../lib/harness.mjs';

const COUNT = 10_000;

/** A client pushes 10,000 documents; a fresh client pulls them all, each exactly once. */
export async function initialSync10k(ctx) {
    const name = await ctx.collection();
    const docs = {};
    for (let i = 0; i < COUNT; i++) {
        const doc = { id: `doc-${String(i).padStart(5, '0')}`, title: `title ${i}`, done: i % 3 === 0, n: i };
        docs[doc.id] = doc;
    }

    const writer = await ctx.client('writer', name);
    await writer.collection.bulkInsert(Object.values(docs));
    let started = performance.now();
    await writer.start();
    await writer.awaitInSync(120_000);
    ctx.metric('push_10k', Math.round(performance.now() - started), 'ms');
    assertSameDocs(docs, await ctx.serverState(name), 'syncd after the push');

    const reader = await ctx.client('reader', name);
    started = performance.now();
    const replication = await reader.start();
    await reader.awaitInSync(120_000);
    ctx.metric('initial_pull_10k', Math.round(performance.now() - started), 'ms');
    assertSameDocs(docs, await reader.state(), 'reader after its initial sync');

    const stats = replication.stats.snapshot();
    ctx.log('reader stats', JSON.stringify(stats), 'received$', replication.received);
    if (stats.countsPulls) {
        assert(stats.pulledDocuments === COUNT,
            `the reader pulled ${stats.pulledDocuments} documents for ${COUNT} (re-downloads or gaps)`);
        // pages of 100: 100 full pages and the empty one that ends the iteration, maybe one more
        // empty page for the RESYNC of the stream's (re)connection
        assert(stats.pullRequests >= 101 && stats.pullRequests <= 103,
            `the reader made ${stats.pullRequests} pull requests for 100 pages`);
    }
    assert(replication.received === COUNT, `received$ emitted ${replication.received} documents, expected ${COUNT}`);
    for (const client of [writer, reader]) {
        assert(client.errors.length === 0, `${client.name} reported errors: ${JSON.stringify(client.errors.slice(0, 3))}`);
    }
}
