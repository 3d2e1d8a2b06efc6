/**
 * The RxDB versions of the matrix, loaded from npm under their own names:
 *   '17' → the package `rxdb` (17.6.0; also what rxdb-server's own `require('rxdb')` finds)
 *   '15' → the npm alias `rxdb15` (rxdb@15.39.0)
 * Each adapter hides the few API differences the scenarios meet (rxdb-protocol.md §2.8):
 * the conflictHandler shape and close() vs destroy().
 *
 * format 'esm' (default) imports the ESM build. A way in whose client only works through
 * CommonJS (rxdb-server 15.22.0, rxdb-protocol.md §0) asks for format 'cjs', so that the
 * database and the replication come from the same (CJS) copy of rxdb. That client does its own
 * `require('rxdb')`, which must find the version under test as the package `rxdb`: for '17' that
 * is this project's, for '15' the one of ../node-rxdb15 (rxdb@15.39.0 with its own rxdb-server,
 * eventsource and rxjs), so format 'cjs' loads everything from CJS_HOMES[version].
 */
import { createRequire } from 'node:module';

const here = createRequire(import.meta.url);

export const PACKAGES = { 17: 'rxdb', 15: 'rxdb15' };
/** Where format 'cjs' resolves `rxdb` (and the way's client) for each version. */
const CJS_HOMES = { 17: import.meta.url, 15: new URL('../../node-rxdb15/package.json', import.meta.url) };

export async function loadRxdb(version, { format = 'esm' } = {}) {
    if (!PACKAGES[version]) {
        throw new Error(`unknown rxdb version ${JSON.stringify(version)}; known: ${Object.keys(PACKAGES).join(', ')}`);
    }
    const pkg = format === 'cjs' ? 'rxdb' : PACKAGES[version];
    const require = format === 'cjs' ? createRequire(CJS_HOMES[version]) : here;
    const load = format === 'cjs' ? async (path) => require(path) : (path) => import(path);
    const core = await load(pkg);
    const { getRxStorageMemory } = await load(`${pkg}/plugins/storage-memory`);
    const { replicateRxCollection } = await load(`${pkg}/plugins/replication`);
    // Collections whose schema has a version > 0 (with migrationStrategies) need it, as in apps.
    const { RxDBMigrationSchemaPlugin } = await load(`${pkg}/plugins/migration-schema`);
    core.addRxPlugin(RxDBMigrationSchemaPlugin);
    // A validating storage (ajv, RxDB's own wrapper) for scenarios that must prove RxDB accepts
    // what syncd sends against the schema, e.g. the placeholder deletions of partial replication.
    const { wrappedValidateAjvStorage } = await load(`${pkg}/plugins/validate-ajv`);
    const installed = require(`${pkg}/package.json`).version;
    const major = Number(installed.split('.')[0]);

    return {
        version: String(version),
        installed,
        pkg,
        format,
        core,
        replicateRxCollection,
        /** Load another plugin of the same copy, e.g. `plugin('replication-websocket')`. */
        plugin: (name) => load(`${pkg}/plugins/${name}`),
        /** A CJS require that resolves like this copy does (for rxdb-server and friends). */
        require,

        /** `validate`: wrap the memory storage in RxDB's ajv validation (every write is checked). */
        async createDatabase(name, { validate = false } = {}) {
            const storage = getRxStorageMemory();
            return core.createRxDatabase({
                name,
                storage: validate ? wrappedValidateAjvStorage({ storage }) : storage,
                multiInstance: false,
                eventReduce: true,
            });
        },

        async closeDatabase(db) {
            if (typeof db.close === 'function') {
                await db.close();
            } else {
                await db.destroy();
            }
        },

        /**
         * A custom conflict handler from one function `resolve({realMasterState,
         * newDocumentState, assumedMasterState}) → document`, in the shape this version wants:
         *   v16+: { isEqual(a, b), resolve(input) }
         *   v15:  async (input) => ({ isEqual: true } | { isEqual: false, documentData })
         */
        conflictHandler(resolve) {
            const isEqual = (a, b) => core.deepEqual(strip(a), strip(b));
            if (major >= 16) {
                return { isEqual, resolve: async (input) => resolve(input) };
            }
            return async (input) => {
                if (isEqual(input.newDocumentState, input.realMasterState)) {
                    return { isEqual: true };
                }
                return { isEqual: false, documentData: await resolve(input) };
            };
        },
    };
}

/** A document without RxDB's bookkeeping fields. */
export function strip(doc) {
    if (!doc) {
        return doc;
    }
    const { _meta, _rev, _attachments, ...rest } = doc;
    return rest;
}
