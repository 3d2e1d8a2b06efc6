// The benchmark peer: RxDB's own Node replication server (rxdb-server 15.22.0, memory storage)
// serving one collection, `benchdocs`, declared from ../bench_schema.json, so that
// loadtests/bench.py drives it and syncd's /rxdb/... endpoint with the same requests.
//
//   node loadtests/peer/server.mjs --port P
//
// Listens on 127.0.0.1 only, prints `READY http://127.0.0.1:P/benchdocs/0` once listening
// (the URL replicateServer's `url` takes; append /pull, /push, /pullStream) and exits on
// SIGTERM or SIGINT. No auth: the default authHandler accepts every request.
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

import express from 'express';
import { createRxDatabase } from 'rxdb';
import { getRxStorageMemory } from 'rxdb/plugins/storage-memory';
import { createRxServer } from 'rxdb-server/plugins/server';
import { RxServerAdapterExpress } from 'rxdb-server/plugins/adapter-express';

const HOST = '127.0.0.1';
const COLLECTION = 'benchdocs';
// A push batch of 100 ~1 KB documents is ~110 kB, over express.json()'s 100 kB default,
// which the stock adapter would answer with 413; leave ample room for larger batches.
const JSON_BODY_LIMIT = '64mb';

function parsePort() {
  const { values } = parseArgs({ options: { port: { type: 'string' } } });
  const port = Number(values.port);
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    console.error('usage: node server.mjs --port P');
    process.exit(2);
  }
  return port;
}

// The stock adapter's create() installs express.json() with the default limit; passing our
// own app (the adapter's other hooks only need an express app) lets us raise the limit.
function expressApp() {
  const app = express();
  app.use(express.json({ limit: JSON_BODY_LIMIT }));
  return app;
}

async function main() {
  const port = parsePort();
  const schema = JSON.parse(readFileSync(new URL('../bench_schema.json', import.meta.url), 'utf8'));
  const database = await createRxDatabase({
    name: 'benchpeer',
    storage: getRxStorageMemory(),
    multiInstance: false,
  });
  const collections = await database.addCollections({ [COLLECTION]: { schema } });
  const server = await createRxServer({
    database,
    adapter: RxServerAdapterExpress,
    serverApp: expressApp(),
    hostname: HOST,
    port,
    cors: '*',
  });
  const endpoint = server.addReplicationEndpoint({
    name: COLLECTION,
    collection: collections[COLLECTION],
  });
  await server.start();
  process.stdout.write(`READY http://${HOST}:${port}/${endpoint.urlPath}\n`);

  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    // Close open SSE streams too, otherwise server.close() would wait for them.
    await RxServerAdapterExpress.closeAllConnections(server.serverApp);
    await database.destroy();
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
