#!/usr/bin/env node
/**
 * Runs one scenario with one way in and one RxDB version against a running syncd:
 *
 *   SYNCD_URL=http://127.0.0.1:8123 node run.mjs --way native --rxdb 17 --scenario hostile_values
 *   node run.mjs --list
 *
 * Exits 0 when the scenario passed, 1 with a "FAIL …" message otherwise. It talks to the pytest
 * that started it over stdio (lib/harness.mjs: `@@rpc` lines), so run it through
 * `.venv/bin/pytest tests/e2e` rather than by hand.
 */
import { parseArgs } from 'node:util';
import { closeRpc, Context, withTimeout } from './lib/harness.mjs';
import { loadRxdb } from './lib/rxdb.mjs';
import { getWay, WAYS } from './lib/ways/index.mjs';
import { SCENARIOS } from './scenarios/index.mjs';

const { values } = parseArgs({
    options: {
        way: { type: 'string', default: 'native' },
        rxdb: { type: 'string', default: '17' },
        scenario: { type: 'string' },
        list: { type: 'boolean', default: false },
        timeout: { type: 'string', default: '240' },
    },
});

if (values.list) {
    const scenarios = Object.entries(SCENARIOS).map(([name, s]) => ({
        name, dedicatedServer: Boolean(s.dedicatedServer), authServer: Boolean(s.authServer),
        notFor: s.notFor ?? {}, pending: s.pending ?? null,
    }));
    const ways = Object.values(WAYS).map((w) => ({ name: w.name, versions: w.versions }));
    console.log(JSON.stringify({ scenarios, ways }));
    process.exit(0);
}

const label = `${values.scenario} (way ${values.way}, rxdb ${values.rxdb})`;
let ctx;
let code = 1;
try {
    const scenario = SCENARIOS[values.scenario];
    if (!scenario) {
        throw new Error(`unknown scenario ${JSON.stringify(values.scenario)}; known: ${Object.keys(SCENARIOS).join(', ')}`);
    }
    if (scenario.pending) {
        throw new Error(`scenario is pending: ${scenario.pending}`);
    }
    const way = getWay(values.way);
    if (scenario.notFor?.[way.name]) {
        throw new Error(`scenario does not apply to way ${way.name}: ${scenario.notFor[way.name]}`);
    }
    if (!way.versions.includes(values.rxdb)) {
        throw new Error(`way ${way.name} does not run with rxdb ${values.rxdb} (only ${way.versions.join(', ')})`);
    }
    const syncdUrl = process.env.SYNCD_URL;
    if (!syncdUrl) {
        throw new Error('SYNCD_URL is not set (the pytest module sets it)');
    }
    const rx = await loadRxdb(values.rxdb, { format: way.format });
    ctx = new Context({ way, rx, syncdUrl, scenario: values.scenario });
    ctx.log(`rxdb ${rx.installed} (${rx.pkg}, ${rx.format}), way ${way.name}, syncd ${syncdUrl}`);
    const started = performance.now();
    await withTimeout(scenario.run(ctx), Number(values.timeout) * 1000, label);
    ctx.metric('scenario_total', Math.round(performance.now() - started), 'ms');
    console.log(`PASS ${label}`);
    code = 0;
} catch (err) {
    console.log(`FAIL ${label}: ${err?.message ?? err}`);
    if (err?.stack) {
        console.log(err.stack);
    }
    for (const client of ctx?.clients ?? []) {
        const replication = client.replication;
        console.log(`client ${client.name}: ${client.errors.length} error(s) ${JSON.stringify(client.errors.slice(-5))}` +
            (replication ? `; stats ${JSON.stringify(replication.stats.snapshot())}, received$ ${replication.received}, ` +
                `live ${replication.isLive()}, stopped ${replication.state.isStopped()}` : ''));
    }
} finally {
    if (ctx) {
        await withTimeout(ctx.closeAll(), 10_000, 'closing the clients').catch((err) => console.log(`(cleanup: ${err.message})`));
    }
    closeRpc();
    process.exit(code);
}
