/**
 * Way in: replicateRxCollection wired to syncd's native API by the clients/js helper
 * (`syncd-rxdb/core`, given the replicateRxCollection of the RxDB version under test).
 */
import WebSocket from 'ws';
import { replicateSyncdWith } from 'syncd-rxdb/core';
import { ReplicationStats } from '../stats.mjs';

export const native = {
    name: 'native',
    /** RxDB versions this way can run with. */
    versions: ['17', '15'],
    /** How the version adapter must load rxdb for this way ('esm' or 'cjs'). */
    format: 'esm',

    /** @param {import('./index.mjs').ReplicateArgs} args */
    async replicate(args) {
        const stats = new ReplicationStats();
        const countingFetch = async (url, init) => {
            const response = await fetch(url, init);
            if (init.method === 'GET') {
                const body = await response.clone().json().catch(() => null);
                stats.pulled(Array.isArray(body?.documents) ? body.documents.length : 0);
            } else {
                stats.pushed(Array.isArray(init.body) ? init.body.length : JSON.parse(init.body).length);
            }
            return response;
        };
        const state = replicateSyncdWith(args.rx.replicateRxCollection, {
            collection: args.collection,
            url: args.syncdUrl,
            collectionName: args.collectionName,
            replicationIdentifier: args.identifier,
            token: args.token,
            filter: args.filter,
            live: args.live,
            batchSize: args.batchSize,
            pull: args.pullBatchSize ? { batchSize: args.pullBatchSize } : undefined,
            push: args.pushBatchSize ? { batchSize: args.pushBatchSize } : undefined,
            retryTime: args.retryTime,
            reconnect: args.reconnect,
            WebSocket: process.env.E2E_DEBUG_FRAMES ? debugSocket(args.identifier) : WebSocket,
            fetch: countingFetch,
        });
        let connected = false;
        state.streamConnected$.subscribe((value) => {
            connected = value;
            stats.liveChanged(value);
        });
        const signals = { unauthorized: 0, forbidden: 0, outdated: 0, permanentErrors: [] };
        state.permanentError$.subscribe((err) => {
            signals.permanentErrors.push({ source: err.source, status: err.status, code: err.code, closeCode: err.closeCode });
        });
        return {
            state,
            stats,
            signals,
            isLive: () => connected,
            permanentError$: state.permanentError$,
        };
    },
};

function debugSocket(label) {
    return class extends WebSocket {
        constructor(...params) {
            super(...params);
            this.addEventListener('message', (e) => {
                const text = String(e.data);
                let summary = text;
                try {
                    const v = JSON.parse(text);
                    if (v && v.documents) summary = JSON.stringify({ ids: v.documents.map((d) => [d.id, d.n]), cp: v.checkpoint });
                } catch { /* keep text */ }
                console.log(`[frame ${label.slice(-6)}] ${summary.slice(0, 300)}`);
            });
            this.addEventListener('close', (e) => console.log(`[close ${label.slice(-6)}] ${e.code}`));
        }
    };
}
