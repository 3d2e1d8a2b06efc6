// An app that installed syncd-rxdb the way clients/js/README.md says: replicate one document
// each way with replicateSyncd() (live, over the websocket stream), then exit 0.
// Usage: node replicate_one.mjs SYNCD_URL COLLECTION SCHEMA.json
import { readFileSync } from 'node:fs';
import WebSocket from 'ws';
import { createRxDatabase } from 'rxdb';
import { getRxStorageMemory } from 'rxdb/plugins/storage-memory';
import { replicateSyncd } from 'syncd-rxdb';

const [url, collectionName, schemaFile] = process.argv.slice(2);
const schema = JSON.parse(readFileSync(schemaFile, 'utf8'));
const timer = setTimeout(() => {
    console.error('FAIL: no replication within 60 s');
    process.exit(1);
}, 60_000);

const db = await createRxDatabase({ name: 'app', storage: getRxStorageMemory() });
await db.addCollections({ todos: { schema } });
const replication = replicateSyncd({ collection: db.todos, collectionName, url, WebSocket });
replication.error$.subscribe((err) => console.error('error$', err?.message ?? err));
await replication.awaitInitialReplication();

const pulled = await db.todos.findOne('from-server').exec();
if (pulled?.title !== 'pushed with curl') {
    console.error('FAIL: the server document was not pulled:', pulled?.toJSON());
    process.exit(1);
}
await db.todos.insert({ id: 'from-app', title: 'written in the app', done: false });
await replication.awaitInSync();
await replication.cancel();
await db.remove();
clearTimeout(timer);
console.log('OK replicated one document each way');
