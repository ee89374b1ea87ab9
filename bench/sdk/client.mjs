// The official Directus SDK's realtime client keeping a replica of posts, run by
// bench/cmd/compare under the child protocol of bench/child.go:
//
//   node --expose-gc client.mjs --url http://127.0.0.1:8055 --token T --events E \
//        [--times FILE] [--mode iter|listener]
//
// --mode iter (the default) reads the subscription the way the SDK's realtime
// documentation shows: `for await (const item of subscription)`. --mode listener
// reads the same subscription through client.onWebSocket('message', …), the
// other documented way (the realtime chat guide). Either way the replica is a Map
// keyed by String(id), so that delete keys sent as numbers (1521) and as strings
// ("1521") both find their row; init replaces the contents, create and update set
// rows, delete removes keys.
import { createDirectus, realtime, staticToken } from '@directus/sdk';
import { readFileSync, writeFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';

const { values: args } = parseArgs({
  options: {
    url: { type: 'string' },
    token: { type: 'string' },
    events: { type: 'string', default: '0' },
    times: { type: 'string', default: '' },
    mode: { type: 'string', default: 'iter' },
  },
});
const expectedEvents = Number(args.events);
const now = () => performance.timeOrigin + performance.now(); // unix ms
const times = new Float64Array(expectedEvents);
let applied = 0;
let inits = 0;
let initAt = 0;
let firstInitAt = 0;
const rows = new Map();
const client = `sdk-${args.mode}`;

function apply(msg) {
  switch (msg.event) {
    case 'init':
      rows.clear();
      for (const row of msg.data) rows.set(String(row.id), row);
      inits++;
      initAt = now();
      if (!firstInitAt) firstInitAt = initAt;
      return true;
    case 'create':
    case 'update':
      for (const row of msg.data) rows.set(String(row.id), row);
      break;
    case 'delete':
      for (const key of msg.data) rows.delete(String(key));
      break;
    default:
      return false;
  }
  if (applied < expectedEvents) times[applied] = now();
  applied++;
  return false;
}

function fail(err) {
  process.stdout.write(JSON.stringify({ client, runtime: `node ${process.version}`, error: String(err?.stack ?? err) }) + '\n');
  process.exit(1);
}

try {
  globalThis.gc();
  const before = process.memoryUsage();
  const startAt = now();
  const cpu0 = process.cpuUsage();

  const directus = createDirectus(args.url).with(staticToken(args.token)).with(realtime());
  await directus.connect();
  let synced;
  const initApplied = new Promise((resolve) => (synced = resolve));
  if (args.mode === 'listener') {
    directus.onWebSocket('message', (msg) => {
      if (msg.type === 'subscription' && apply(msg)) synced();
    });
    await directus.subscribe('posts', { query: { limit: -1 } });
  } else {
    const { subscription } = await directus.subscribe('posts', { query: { limit: -1 } });
    (async () => {
      for await (const item of subscription) {
        if (apply(item)) synced();
      }
    })().catch(fail);
  }
  await initApplied;
  const cpu1 = process.cpuUsage();
  process.stdout.write(JSON.stringify({ client, init_ms: initAt - startAt, rows: rows.size }) + '\n');

  const rl = createInterface({ input: process.stdin });
  const line = await new Promise((resolve) => rl.once('line', resolve));
  rl.close();
  const expect = JSON.parse(line);
  const quietMS = expect.quiet_ms > 0 ? expect.quiet_ms : 5000;

  // Wait for every event, or until none came for quietMS; polled, so that
  // waiting costs nothing per event.
  let quiet = false;
  await new Promise((resolve) => {
    let last = -1;
    let since = now();
    const timer = setInterval(() => {
      if (applied >= expectedEvents) {
        clearInterval(timer);
        resolve();
      } else if (applied !== last) {
        last = applied;
        since = now();
      } else if (now() - since > quietMS) {
        quiet = true;
        clearInterval(timer);
        resolve();
      }
    }, 1);
  });

  const cpu2 = process.cpuUsage();
  globalThis.gc();
  const after = process.memoryUsage();
  const want = JSON.parse(readFileSync(expect.expected, 'utf8'));
  let missing = 0;
  let changed = 0;
  for (const w of want) {
    const r = rows.get(String(w.id));
    if (!r) missing++;
    else if (r.title !== w.title || r.status !== w.status || r.views !== w.views || Number(r.id) !== w.id) changed++;
  }
  const extra = rows.size - (want.length - missing);
  const n = rows.size;
  const recorded = Math.min(applied, expectedEvents);
  if (args.times) writeFileSync(args.times, Buffer.from(times.buffer, 0, recorded * 8));
  process.stdout.write(
    JSON.stringify({
      client,
      runtime: `node ${process.version}`,
      events: applied,
      inits,
      start_at: startAt,
      first_init_at: firstInitAt,
      init_at: initAt,
      first_at: recorded > 0 ? times[0] : 0,
      last_at: recorded > 0 ? times[recorded - 1] : 0,
      rows: n,
      missing,
      extra,
      changed,
      correct: missing === 0 && extra === 0 && changed === 0,
      heap_per_row: n ? (after.heapUsed - before.heapUsed) / n : 0,
      live_per_row: n ? (after.heapUsed - before.heapUsed) / n : 0,
      rss_per_row: n ? (after.rss - before.rss) / n : 0,
      rss_bytes: after.rss,
      cpu_init_ms: (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / 1000,
      cpu_events_ms: (cpu2.user + cpu2.system - cpu1.user - cpu1.system) / 1000,
      quiet,
    }) + '\n',
  );
  directus.disconnect();
  process.exit(0);
} catch (err) {
  fail(err);
}
