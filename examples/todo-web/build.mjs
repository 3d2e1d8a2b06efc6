// One build: src/main.js (+ RxDB 15, rxjs, syncd-rxdb) → dist/app.js; index.html and style.css copied.
import { build } from 'esbuild';
import { cpSync, mkdirSync, rmSync } from 'node:fs';

const here = process.cwd();

// syncd-rxdb is linked from ../../clients/js (package.json: "file:../../clients/js"), whose own
// node_modules may hold another RxDB (17, for its tests). Its imports of rxdb and rxjs must use
// this app's copies, the RxDB the database is created with: one RxDB 15 in the bundle.
const oneRxdb = {
    name: 'one-rxdb',
    setup(build) {
        build.onResolve({ filter: /^(rxdb|rxjs)(\/|$)/ }, async (args) => {
            if (args.pluginData === 'one-rxdb' || args.resolveDir.startsWith(here + '/')) return undefined;
            return build.resolve(args.path, { kind: args.kind, resolveDir: here, pluginData: 'one-rxdb' });
        });
    },
};

rmSync('dist', { recursive: true, force: true });
mkdirSync('dist');
const result = await build({
    entryPoints: ['src/main.js'],
    outfile: 'dist/app.js',
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: 'es2020',
    minify: true,
    sourcemap: true,
    legalComments: 'none',
    plugins: [oneRxdb],
    metafile: true,
    logLevel: 'info',
});
cpSync('src/index.html', 'dist/index.html');
cpSync('src/style.css', 'dist/style.css');

// the bundle must hold exactly one RxDB (this app's 15.x)
const copies = new Set(Object.keys(result.metafile.inputs)
    .map((path) => path.match(/^(.*node_modules\/rxdb)\//)?.[1])
    .filter(Boolean));
if (copies.size !== 1 || ![...copies][0].startsWith('node_modules/rxdb')) {
    throw new Error(`expected one RxDB (./node_modules/rxdb) in the bundle, found: ${[...copies].join(', ')}`);
}
