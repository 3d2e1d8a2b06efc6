// The todo page: RxDB 15 on IndexedDB (Dexie storage), two collections (lists, todos), each
// replicated with syncd through clients/js (`replicateSyncd`: native API + live stream).
import { addRxPlugin, createRxDatabase, deepEqual } from 'rxdb';
import { RxDBLeaderElectionPlugin } from 'rxdb/plugins/leader-election';
import { getRxStorageDexie } from 'rxdb/plugins/storage-dexie';
import { combineLatest } from 'rxjs';
import { replicateSyncd } from 'syncd-rxdb';
import listSchema from '../lists.schema.json';
import todoSchema from '../todos.schema.json';

// replicateRxCollection waits for leadership (one tab replicates per browser profile): RxDB 15
// needs the leader-election plugin for that. Nothing else: no dev-mode, no query builder.
addRxPlugin(RxDBLeaderElectionPlugin);

// syncd's base URL: ?syncd=http://host:port, else port 8080 on the page's host.
const params = new URLSearchParams(location.search);
const SYNCD_URL = params.get('syncd') || `${location.protocol}//${location.hostname}:8080`;

// Conflict handler: last writer wins, by `updatedAt` (ms since epoch, set by the device that made
// the edit). RxDB 15 calls it when syncd reports a conflict on a push (and for equality checks):
// the newer of the two whole documents is kept; a tie keeps the server's. It trusts the devices'
// clocks, and the losing document's edit is dropped in full (no field-level merge).
const conflicts = [];
function lastWriterWins(input, context) {
    const mine = input.newDocumentState;
    const theirs = input.realMasterState;
    if (deepEqual(mine, theirs)) {
        return Promise.resolve({ isEqual: true });
    }
    const keepMine = (mine.updatedAt ?? 0) > (theirs.updatedAt ?? 0);
    if (context === 'replication-resolve-conflict') {
        // a conflict syncd reported on a push (not one of RxDB's equality checks): show it
        const label = (doc) => doc.title ?? doc.name ?? doc.id;
        conflicts.push({
            kept: label(keepMine ? mine : theirs),
            dropped: label(keepMine ? theirs : mine),
            from: keepMine ? 'this device' : 'the server',
        });
        renderConflicts();
    }
    return Promise.resolve({ isEqual: false, documentData: keepMine ? mine : theirs });
}

const $ = (selector) => document.querySelector(selector);
const el = (tag, { dataset = {}, ...props } = {}, ...children) => {
    const node = Object.assign(document.createElement(tag), props);
    Object.assign(node.dataset, dataset);
    node.append(...children);
    return node;
};

function newId() {
    const bytes = crypto.getRandomValues(new Uint8Array(12));
    return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

const state = { lists: [], todos: [], selected: location.hash.slice(1) || null };

async function main() {
    $('#server').textContent = SYNCD_URL.replace(/^https?:\/\//, '');
    const db = await createRxDatabase({ name: 'syncd-todo', storage: getRxStorageDexie() });
    await db.addCollections({
        lists: { schema: listSchema, conflictHandler: lastWriterWins },
        todos: { schema: todoSchema, conflictHandler: lastWriterWins },
    });
    window.todoApp = { db, conflicts }; // for the console (and the browser test)

    // Sync while the browser says it is online. Going offline cancels the replications (an open
    // websocket can outlive the network for minutes); coming back starts them again, and RxDB
    // resumes from its stored checkpoints and pushes what was written meanwhile.
    let sync = null;
    let stopping = Promise.resolve();
    const startSync = () => {
        if (sync) return;
        const replications = ['lists', 'todos'].map((name) => {
            const replication = replicateSyncd({
                collection: db[name],
                url: SYNCD_URL,
                retryTime: 2000,
                reconnect: { initialDelay: 250, maxDelay: 5000 },
                onPermanentError: (err) => showError(`Sync of ${name} stopped: ${err.message}`),
            });
            replication.error$.subscribe((err) => console.warn(`sync ${name}:`, err));
            return replication;
        });
        const status = combineLatest(replications.map((r) => r.streamConnected$))
            .subscribe((connected) => showStatus(connected.every(Boolean) ? 'live' : 'connecting'));
        sync = { replications, status };
    };
    const stopSync = async () => {
        if (!sync) return;
        const { replications, status } = sync;
        sync = null;
        status.unsubscribe();
        showStatus('offline');
        stopping = Promise.all(replications.map((r) => r.cancel()));
        await stopping;
    };
    window.addEventListener('offline', () => void stopSync());
    window.addEventListener('online', () => void stopping.then(() => navigator.onLine && startSync()));
    if (navigator.onLine) startSync(); else showStatus('offline');

    db.lists.find().$.subscribe((docs) => {
        state.lists = docs.map((d) => d.toJSON()).sort(byCreation);
        render();
    });
    db.todos.find().$.subscribe((docs) => {
        state.todos = docs.map((d) => d.toJSON()).sort(byCreation);
        render();
    });

    $('#new-list').addEventListener('submit', async (event) => {
        event.preventDefault();
        const input = $('#new-list input');
        const name = input.value.trim();
        if (!name) return;
        const now = Date.now();
        const id = newId();
        await db.lists.insert({ id, name, createdAt: now, updatedAt: now });
        input.value = '';
        select(id);
    });
    $('#new-todo').addEventListener('submit', async (event) => {
        event.preventDefault();
        const input = $('#new-todo input');
        const title = input.value.trim();
        const list = currentList();
        if (!title || !list) return;
        const now = Date.now();
        await db.todos.insert({ id: newId(), listId: list.id, title, done: false, createdAt: now, updatedAt: now });
        input.value = '';
    });
    $('#delete-list').addEventListener('click', async () => {
        const list = currentList();
        if (!list) return;
        const todos = await db.todos.find({ selector: { listId: list.id } }).exec();
        await Promise.all(todos.map(removeNow));
        const doc = await db.lists.findOne(list.id).exec();
        if (doc) await removeNow(doc);
        select(null);
    });
    window.addEventListener('hashchange', () => {
        state.selected = location.hash.slice(1) || null;
        render();
    });

    // edits of a todo row: checkbox, title (Enter or leaving the field), delete
    const todoList = $('#todos');
    todoList.addEventListener('change', async (event) => {
        const row = event.target.closest('[data-id]');
        if (!row) return;
        const doc = await db.todos.findOne(row.dataset.id).exec();
        if (!doc) return;
        if (event.target.matches('.done')) {
            await doc.incrementalPatch({ done: event.target.checked, updatedAt: Date.now() });
        } else if (event.target.matches('.title')) {
            const title = event.target.value.trim();
            if (title && title !== doc.title) {
                await doc.incrementalPatch({ title, updatedAt: Date.now() });
            } else {
                event.target.value = doc.title;
            }
        }
    });
    todoList.addEventListener('keydown', (event) => {
        if (event.key === 'Enter' && event.target.matches('.title')) event.target.blur();
    });
    todoList.addEventListener('click', async (event) => {
        if (!event.target.matches('.delete')) return;
        const row = event.target.closest('[data-id]');
        const doc = await db.todos.findOne(row.dataset.id).exec();
        if (doc) await removeNow(doc);
    });
    document.body.dataset.ready = 'true';
}

// A delete is an edit too: it gets its own updatedAt first, so that last writer wins also
// between a delete and an edit (else an older edit made offline would bring the todo back).
async function removeNow(doc) {
    const stamped = await doc.incrementalPatch({ updatedAt: Date.now() });
    await stamped.remove();
}

function byCreation(a, b) {
    return a.createdAt - b.createdAt || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
}

function currentList() {
    return state.lists.find((l) => l.id === state.selected) ?? state.lists[0] ?? null;
}

function select(id) {
    history.replaceState(null, '', id ? `#${id}` : location.pathname + location.search);
    state.selected = id;
    render();
}

function render() {
    const list = currentList();
    const nav = $('#lists');
    nav.replaceChildren(...state.lists.map((l) => {
        const open = state.todos.filter((t) => t.listId === l.id && !t.done).length;
        return el('li', {},
            el('a', { href: `#${l.id}`, className: l === list ? 'active' : '', title: l.name },
                el('span', { className: 'name', textContent: l.name }),
                el('span', { className: 'count', textContent: String(open) })));
    }));
    if (state.lists.length === 0) {
        nav.append(el('li', { className: 'hint', textContent: 'No lists yet.' }));
    }

    $('#list-title').textContent = list ? list.name : 'Create a list to start';
    $('#new-todo').hidden = !list;
    $('#delete-list').hidden = !list;
    const todos = list ? state.todos.filter((t) => t.listId === list.id) : [];
    const done = todos.filter((t) => t.done).length;
    $('#summary').textContent = list ? `${todos.length - done} open · ${done} done` : '';

    // keyed update: rows are kept, so a title being typed in is not replaced under the cursor
    const container = $('#todos');
    const rows = new Map([...container.children].map((row) => [row.dataset.id, row]));
    const ordered = todos.map((todo) => {
        const row = rows.get(todo.id) ?? todoRow(todo.id);
        rows.delete(todo.id);
        row.classList.toggle('done', todo.done);
        row.querySelector('.done').checked = todo.done;
        const title = row.querySelector('.title');
        if (document.activeElement !== title) title.value = todo.title;
        row.querySelector('.when').textContent = `edited ${formatTime(todo.updatedAt)}`;
        row.querySelector('.when').title = `edited ${new Date(todo.updatedAt).toLocaleString()}`;
        return row;
    });
    for (const row of rows.values()) row.remove();
    ordered.forEach((row, i) => {
        if (container.children[i] !== row) container.insertBefore(row, container.children[i] ?? null);
    });
    $('#empty').hidden = !list || todos.length > 0;
}

function todoRow(id) {
    return el('li', { className: 'todo', dataset: { id } },
        el('input', { type: 'checkbox', className: 'done', ariaLabel: 'done' }),
        el('input', { type: 'text', className: 'title', ariaLabel: 'title', maxLength: 500 }),
        el('time', { className: 'when' }),
        el('button', { type: 'button', className: 'delete', title: 'Delete', ariaLabel: 'delete', textContent: '×' }));
}

function formatTime(ms) {
    return new Date(ms).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
}

function renderConflicts() {
    // the last three conflicts this page resolved, newest first
    const box = $('#conflicts');
    box.hidden = conflicts.length === 0;
    box.replaceChildren(
        el('strong', { textContent: 'Conflicts resolved (last writer wins)' }),
        el('ul', {}, ...conflicts.slice(-3).reverse().map((c) => el('li', {},
            'kept ', el('q', { textContent: c.kept }), ` (newer, from ${c.from}) over `,
            el('q', { textContent: c.dropped })))));
}

const STATUS = { live: 'Live', connecting: 'Connecting…', offline: 'Offline' };

function showStatus(name) {
    const status = $('#status');
    status.dataset.state = name;
    status.textContent = STATUS[name];
}

function showError(message) {
    const box = $('#error');
    box.hidden = false;
    box.textContent = message;
}

main().catch((err) => {
    console.error(err);
    showError(`Could not start: ${err.message}`);
});
