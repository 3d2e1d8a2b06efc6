import { assert, eventually, seededRandom } from '../lib/harness.mjs';

/**
 * Two live clients insert, update and delete concurrently (on each other's documents too, so
 * conflicts happen and RxDB's default handler lets the master win); after each round both
 * clients and syncd hold the same documents.
 */
export async function twoClientsConverge(ctx) {
    const name = await ctx.collection();
    const a = await ctx.client('a', name);
    const b = await ctx.client('b', name);
    await a.start();
    await b.start();
    await Promise.all([a.whenLive(), b.whenLive()]);

    const random = seededRandom(20240611);
    const counts = { insert: 0, update: 0, remove: 0, sharedInsert: 0, lostRace: 0 };
    for (let round = 0; round < 3; round++) {
        await Promise.all([
            randomWrites(a, `a${round}`, 40, random, counts),
            randomWrites(b, `b${round}`, 40, random, counts),
        ]);
        const state = await ctx.converged(name, [a, b]);
        ctx.log(`round ${round}: converged on ${Object.keys(state).length} documents`);
    }
    ctx.log('operations', JSON.stringify(counts));
    const tombstones = Object.values(await ctx.serverDocuments(name)).filter((d) => d._deleted).length;
    assert(counts.remove > 0 && tombstones > 0, `expected deletes to reach syncd as tombstones, got ${tombstones}`);
    for (const client of [a, b]) {
        assert(client.errors.length === 0, `${client.name} reported errors: ${JSON.stringify(client.errors.slice(0, 3))}`);
    }
}

async function randomWrites(client, prefix, count, random, counts) {
    for (let i = 0; i < count; i++) {
        const docs = await client.collection.find().exec();
        const roll = random();
        try {
            if (roll < 0.35 || docs.length === 0) {
                await client.collection.insert({ id: `${prefix}-${i}`, title: `new ${prefix}-${i}`, n: 0, done: false });
                counts.insert += 1;
            } else if (roll < 0.45) {
                // both clients write the same ids: insert/insert conflicts
                await client.collection.upsert({ id: `shared-${Math.floor(random() * 5)}`, title: `upsert by ${prefix}`, n: i });
                counts.sharedInsert += 1;
            } else if (roll < 0.8) {
                const doc = docs[Math.floor(random() * docs.length)];
                await doc.incrementalPatch({ n: (doc.n ?? 0) + 1, title: `${doc.title.slice(0, 40)} / ${prefix}` });
                counts.update += 1;
            } else {
                const doc = docs[Math.floor(random() * docs.length)];
                await doc.remove();
                counts.remove += 1;
            }
        } catch (err) {
            // the replication changed or deleted the document between find() and the write
            counts.lostRace += 1;
        }
        if (random() < 0.3) {
            await new Promise((resolve) => setTimeout(resolve, Math.floor(random() * 15)));
        }
    }
}

/** Merge both sides deterministically: titles joined in sorted order, the larger n, done if either. */
function merge({ realMasterState, newDocumentState }) {
    const titles = new Set([...realMasterState.title.split('+'), ...newDocumentState.title.split('+')]);
    return {
        ...realMasterState,
        title: [...titles].sort().join('+'),
        n: Math.max(realMasterState.n ?? 0, newDocumentState.n ?? 0),
        done: Boolean(realMasterState.done || newDocumentState.done),
        _deleted: false,
    };
}

/**
 * Both clients edit the same document while offline; the second to come back gets a conflict
 * from syncd, resolves it with the custom handler (in the shape of its RxDB version), and the
 * merged document ends identical on both clients and in syncd.
 */
export async function customConflictHandler(ctx) {
    const name = await ctx.collection();
    const a = await ctx.client('a', name, { resolveConflict: merge });
    const b = await ctx.client('b', name, { resolveConflict: merge });
    await a.start();
    await b.start();
    await a.collection.insert({ id: 'shared', title: 'base', n: 1, done: false });
    await ctx.converged(name, [a, b], { expectCount: 1 });

    await a.stop();
    await b.stop();
    await (await a.collection.findOne('shared').exec()).incrementalPatch({ title: 'from-a', n: 5 });
    await (await b.collection.findOne('shared').exec()).incrementalPatch({ title: 'from-b', n: 3, done: true });

    await a.start();
    await a.awaitInSync();
    await eventually(async () => {
        const server = await ctx.serverState(name);
        assert(server.shared?.title === 'from-a', `syncd has ${JSON.stringify(server.shared)}`);
    }, { what: "a's offline edit to reach syncd" });

    await b.start();
    const state = await ctx.converged(name, [a, b], { expectCount: 1 });
    const expected = { id: 'shared', title: 'from-a+from-b', n: 5, done: true };
    assert(JSON.stringify(sortKeys(state.shared)) === JSON.stringify(sortKeys(expected)),
        `merged document is ${JSON.stringify(state.shared)}, expected ${JSON.stringify(expected)}`);
    assert(b.conflictsResolved >= 1, `b's conflict handler was never asked to resolve (${b.conflictsResolved})`);
    ctx.log(`conflict handler calls: a=${a.conflictsResolved} b=${b.conflictsResolved}`);
    for (const client of [a, b]) {
        assert(client.errors.length === 0, `${client.name} reported errors: ${JSON.stringify(client.errors.slice(0, 3))}`);
    }
}

function sortKeys(doc) {
    return Object.fromEntries(Object.entries(doc).sort(([x], [y]) => (x < y ? -1 : 1)));
}

/** A delete (and an update) made while the other client is offline reach it when it returns. */
export async function deleteWhileOffline(ctx) {
    const name = await ctx.collection();
    const a = await ctx.client('a', name);
    const b = await ctx.client('b', name);
    await a.start();
    await b.start();
    await a.collection.bulkInsert([1, 2, 3, 4, 5].map((i) => ({ id: `d${i}`, title: `doc ${i}`, n: i })));
    await ctx.converged(name, [a, b], { expectCount: 5 });

    await b.stop();
    await (await a.collection.findOne('d2').exec()).remove();
    await (await a.collection.findOne('d3').exec()).incrementalPatch({ title: 'updated while b was offline' });
    await (await b.collection.findOne('d4').exec()).incrementalPatch({ title: 'edited by b while offline' });
    await a.awaitInSync();
    await eventually(async () => {
        const d2 = (await ctx.serverDocuments(name)).d2;
        assert(d2?._deleted === true, `syncd has d2 = ${JSON.stringify(d2)}`);
    }, { what: 'the delete to reach syncd as a tombstone' });
    assert((await b.collection.findOne('d2').exec()) !== null, 'b is offline but already lost d2');

    await b.start();
    const state = await ctx.converged(name, [a, b], { expectCount: 4 });
    assert(!('d2' in state), 'd2 came back');
    assert(state.d3.title === 'updated while b was offline', `d3 is ${JSON.stringify(state.d3)}`);
    assert(state.d4.title === 'edited by b while offline', `d4 is ${JSON.stringify(state.d4)}`);
    for (const client of [a, b]) {
        assert(client.errors.length === 0, `${client.name} reported errors: ${JSON.stringify(client.errors.slice(0, 3))}`);
    }
}
