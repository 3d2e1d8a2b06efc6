import { assert, percentile, sleep } from '../lib/harness.mjs';

/**
 * Live latency: a write on one client reaches the other through the live stream. Measured from
 * the insert on A to the document being in B's collection; B makes no pull request meanwhile
 * (RxDB never polls on a timer, so every delivery here is a stream frame).
 */
export async function liveLatencyStream(ctx) {
    const name = await ctx.collection();
    const a = await ctx.client('a', name);
    const b = await ctx.client('b', name);
    await a.start();
    const replicationB = await b.start();
    await Promise.all([a.whenLive(), b.whenLive()]);
    await Promise.all([a.awaitInSync(), b.awaitInSync()]);
    await sleep(200); // let the RESYNC pull of B's stream connection finish

    const before = replicationB.stats.snapshot();
    const latencies = [];
    for (let i = 0; i < 30; i++) {
        const id = `live-${i}`;
        const arrived = b.waitForDoc(id, () => true, 10_000);
        const started = performance.now();
        await a.collection.insert({ id, title: `live ${i}`, n: i });
        await arrived;
        latencies.push(performance.now() - started);
    }
    // Updates go to different documents: RxDB itself can roll back a document that is edited
    // again within milliseconds, when the stream's echo of the previous edit is processed after
    // the next push completed (an RxDB client race, not a delivery problem; see
    // clients/js/README.md, "Things to know about RxDB itself").
    const updates = [];
    for (let i = 1; i <= 10; i++) {
        const id = `live-${i}`;
        const arrived = b.waitForDoc(id, (d) => d.n === 1000 + i, 10_000);
        const started = performance.now();
        await (await a.collection.findOne(id).exec()).incrementalPatch({ n: 1000 + i });
        await arrived;
        updates.push(performance.now() - started);
    }
    const after = replicationB.stats.snapshot();

    const all = [...latencies, ...updates];
    ctx.metric('latency_p50', Math.round(percentile(all, 50)), 'ms');
    ctx.metric('latency_p95', Math.round(percentile(all, 95)), 'ms');
    ctx.metric('latency_max', Math.round(Math.max(...all)), 'ms');
    if (after.countsPulls) {
        assert(after.pullRequests === before.pullRequests,
            `B made ${after.pullRequests - before.pullRequests} pull requests during the live test: ` +
            'the changes did not (only) come through the stream');
    } else {
        ctx.log(`${ctx.way.name} cannot count pulls: delivery path not checked`);
    }
    if (after.seesLive) {
        assert(after.liveConnections === before.liveConnections,
            `B's live channel reconnected during the test (${before.liveConnections} → ${after.liveConnections})`);
    }
    assert(percentile(all, 50) < 1000, `median push→receive latency ${Math.round(percentile(all, 50))} ms`);
    assert(Math.max(...all) < 5000, `slowest push→receive latency ${Math.round(Math.max(...all))} ms`);
    for (const client of [a, b]) {
        assert(client.errors.length === 0, `${client.name} reported errors: ${JSON.stringify(client.errors.slice(0, 3))}`);
    }
}

/**
 * A client that stops and later starts again with the same replicationIdentifier resumes from its
 * stored checkpoint: it downloads only what changed meanwhile, not the whole collection again.
 */
export async function resumeFromCheckpoint(ctx) {
    const name = await ctx.collection();
    const a = await ctx.client('a', name);
    const b = await ctx.client('b', name);
    await a.collection.bulkInsert(Array.from({ length: 300 }, (_, i) => ({ id: `r${i}`, title: `doc ${i}`, n: i })));
    await a.start();
    await a.awaitInSync();
    const first = await b.start();
    await ctx.converged(name, [a, b], { expectCount: 300 });
    ctx.log('first run of b', JSON.stringify(first.stats.snapshot()), 'received$', first.received);
    if (first.stats.countsPulls) {
        assert(first.stats.pulledDocuments === 300, `b's first run pulled ${first.stats.pulledDocuments} documents`);
    }
    await b.stop();

    await a.collection.bulkInsert(Array.from({ length: 7 }, (_, i) => ({ id: `new${i}`, title: `added while b was stopped ${i}`, n: i })));
    for (const id of ['r10', 'r150', 'r299']) {
        await (await a.collection.findOne(id).exec()).incrementalPatch({ title: `changed while b was stopped` });
    }
    await a.awaitInSync();

    const second = await b.start();
    await ctx.converged(name, [a, b], { expectCount: 307 });
    await second.state.awaitInSync();
    await sleep(300); // a late re-download would show up here
    const stats = second.stats.snapshot();
    ctx.log('second run of b', JSON.stringify(stats), 'received$', second.received);
    if (stats.countsPulls) {
        ctx.metric('resumed_pulled_documents', stats.pulledDocuments, 'docs');
        assert(stats.pulledDocuments === 10,
            `after the restart b pulled ${stats.pulledDocuments} documents; only 10 changed (7 new, 3 updated)`);
    }
    assert(second.received === 10, `after the restart b's received$ emitted ${second.received} documents, expected 10`);
    for (const client of [a, b]) {
        assert(client.errors.length === 0, `${client.name} reported errors: ${JSON.stringify(client.errors.slice(0, 3))}`);
    }
}

/**
 * syncd is stopped and a new process started on the same port while both clients keep writing:
 * nothing is lost (every write of both clients ends on both and in syncd), and the live
 * channel comes back by itself (a later write streams without a pull).
 */
export async function syncdRestart(ctx) {
    const name = await ctx.collection();
    const a = await ctx.client('a', name);
    const b = await ctx.client('b', name);
    await a.start();
    const replicationB = await b.start();
    await Promise.all([a.whenLive(), b.whenLive()]);

    const writes = async (client, prefix, count, pause) => {
        for (let i = 0; i < count; i++) {
            await client.collection.insert({ id: `${prefix}-${String(i).padStart(3, '0')}`, title: `${prefix} ${i}`, n: i });
            await sleep(pause);
        }
    };
    const writing = Promise.all([writes(a, 'a', 150, 20), writes(b, 'b', 100, 30)]);
    await sleep(800);
    const restartStarted = performance.now();
    await ctx.restartSyncd();
    ctx.metric('syncd_restart', Math.round(performance.now() - restartStarted), 'ms');
    const restartedAt = Date.now();
    await writing;
    const writesDone = performance.now();
    await ctx.converged(name, [a, b], { expectCount: 250, timeout: 90_000 });
    ctx.metric('converged_after_writes', Math.round(performance.now() - writesDone), 'ms');

    await Promise.all([a.whenLive(), b.whenLive()]);
    const before = replicationB.stats.snapshot();
    if (before.seesLive) {
        assert(before.liveConnections >= 2, `b's live channel connected ${before.liveConnections} time(s); it never reconnected`);
    }
    await sleep(300);
    const settled = replicationB.stats.snapshot();
    const arrived = b.waitForDoc('after-restart', () => true, 10_000);
    const started = performance.now();
    await a.collection.insert({ id: 'after-restart', title: 'streams again', n: 1 });
    await arrived;
    ctx.metric('latency_after_restart', Math.round(performance.now() - started), 'ms');
    const after = replicationB.stats.snapshot();
    if (after.countsPulls) {
        assert(after.pullRequests === settled.pullRequests,
            `the write after the restart reached b by ${after.pullRequests - settled.pullRequests} pull(s), not the stream`);
    }
    // failed requests while syncd was down are expected (and retried); report them
    ctx.log('errors while syncd restarted', JSON.stringify({ a: a.errors.length, b: b.errors.length }),
        JSON.stringify([...a.errors, ...b.errors].slice(0, 3)));
    for (const client of [a, b]) {
        const late = client.errors.filter((e) => e.at > restartedAt + 15_000);
        assert(late.length === 0, `${client.name} still failed long after the restart: ${JSON.stringify(late.slice(0, 3))}`);
    }
}

/**
 * One document edited again as soon as the other client has the previous edit, 60 times: every
 * edit should reach the other client. RxDB itself can lose such edits: it may process the
 * stream's echo of edit n after edit n+1 was pushed, roll the document back to n, and the next
 * edit then conflicts and loses under "master wins". pytest marks this xfail (not strict) for
 * every way in; it records the race and shows when RxDB or syncd stops hitting it.
 */
export async function rapidEditsOneDocument(ctx) {
    const name = await ctx.collection();
    const a = await ctx.client('a', name);
    const b = await ctx.client('b', name);
    await a.start();
    await b.start();
    await Promise.all([a.whenLive(), b.whenLive()]);
    await a.collection.insert({ id: 'hot', title: 'edited fast', n: 0 });
    await b.waitForDoc('hot', (d) => d.n === 0);

    const started = performance.now();
    for (let i = 1; i <= 60; i++) {
        const arrived = b.waitForDoc('hot', (d) => d.n === i, 3000);
        await (await a.collection.findOne('hot').exec()).incrementalPatch({ n: i });
        try {
            await arrived;
        } catch {
            const onA = (await a.collection.findOne('hot').exec())?.n;
            throw new Error(`edit ${i} of 'hot' was lost: b never got n=${i}; a now has n=${onA} ` +
                '(its RxDB applied a late echo of an earlier edit, then resolved the conflict for the master)');
        }
    }
    ctx.metric('rapid_edits_60', Math.round(performance.now() - started), 'ms');
    const state = await ctx.converged(name, [a, b], { expectCount: 1 });
    assert(state.hot.n === 60, `hot ended with n=${state.hot.n}`);
}
