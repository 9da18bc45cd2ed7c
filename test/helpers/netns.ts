/**
 * Network namespaces for tests: the seeds' topology rebuilt without
 * touching the real host. `outside` and `host` are joined by a veth pair
 * on TEST-NET-2 (198.51.100.0/24): host's end `up0` is its uplink (default
 * route via outside), MTU 1460 like a GCE VPC. Every nestvirt command of a
 * test runs inside `host` with `ip netns exec`; nft tables, links and
 * sysctls are per namespace, so nothing reaches the machine's own.
 */
import { randomBytes } from 'node:crypto';
import { spawn } from 'node:child_process';
import { run } from '../../src/util/exec.js';
import { BIN } from './cli.js';

export const OUTSIDE_IP = '198.51.100.1';
export const HOST_IP = '198.51.100.2';
export const ALIAS_IP = '198.51.100.5';
export const UPLINK = 'up0';
export const UPLINK_MTU = 1460;

/** Runs argv inside a namespace; throws on failure unless check=false. */
export async function nsRun(
  ns: string,
  argv: string[],
  opts: { check?: boolean; input?: string; timeoutMs?: number } = {},
) {
  return run(['ip', 'netns', 'exec', ns, ...argv], {
    check: opts.check ?? true,
    input: opts.input,
    timeoutMs: opts.timeoutMs ?? 60_000,
  });
}

/** Runs bin/nestvirt inside a namespace with NESTVIRT_HOME=home. */
export function nsNestvirt(
  ns: string,
  home: string,
  args: string[],
  opts: { timeoutMs?: number; env?: NodeJS.ProcessEnv } = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const timeoutMs = opts.timeoutMs ?? 300_000;
  return new Promise((resolve, reject) => {
    const child = spawn('ip', ['netns', 'exec', ns, BIN, ...args], {
      env: { ...process.env, NESTVIRT_HOME: home, NO_COLOR: '1', ...opts.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    const t = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(t);
      resolve({ code: code ?? -1, stdout, stderr });
    });
  });
}

export interface Topology {
  host: string;
  outside: string;
  /** Kills every process left in the namespaces and deletes them. */
  destroy(): Promise<void>;
}

/** Makes the outside/host pair. */
export async function makeTopology(): Promise<Topology> {
  const id = randomBytes(3).toString('hex');
  const host = `nvtest-h-${id}`;
  const outside = `nvtest-o-${id}`;
  const topo: Topology = { host, outside, destroy: () => destroyNs([host, outside]) };
  try {
    await run(['ip', 'netns', 'add', host]);
    await run(['ip', 'netns', 'add', outside]);
    await nsRun(host, ['ip', 'link', 'set', 'lo', 'up']);
    await nsRun(outside, ['ip', 'link', 'set', 'lo', 'up']);
    await nsRun(host, [
      'ip',
      'link',
      'add',
      UPLINK,
      'type',
      'veth',
      'peer',
      'name',
      'eth0',
      'netns',
      outside,
    ]);
    await nsRun(host, ['ip', 'link', 'set', UPLINK, 'mtu', String(UPLINK_MTU), 'up']);
    await nsRun(outside, ['ip', 'link', 'set', 'eth0', 'mtu', String(UPLINK_MTU), 'up']);
    await nsRun(host, ['ip', 'addr', 'add', `${HOST_IP}/24`, 'dev', UPLINK]);
    await nsRun(outside, ['ip', 'addr', 'add', `${OUTSIDE_IP}/24`, 'dev', 'eth0']);
    await nsRun(host, ['ip', 'route', 'add', 'default', 'via', OUTSIDE_IP, 'dev', UPLINK]);
  } catch (e) {
    await topo.destroy();
    throw e;
  }
  return topo;
}

/** Kills the processes of namespaces (dnsmasq, QEMU, servers) and deletes them. */
export async function destroyNs(names: string[]): Promise<void> {
  for (const ns of names) {
    for (let i = 0; i < 3; i++) {
      const r = await run(['ip', 'netns', 'pids', ns], { check: false });
      const pids = r.stdout.split(/\s+/).filter(Boolean).map(Number);
      if (!pids.length) break;
      for (const p of pids) {
        try {
          process.kill(p, i === 0 ? 'SIGTERM' : 'SIGKILL');
        } catch {
          /* gone */
        }
      }
      await new Promise((r) => setTimeout(r, 300));
    }
    await run(['ip', 'netns', 'del', ns], { check: false });
  }
}

/** Drops what changes between identical rulesets: handles, counters, metainfo. */
function normNft(json: string): unknown {
  const doc = JSON.parse(json) as { nftables: Record<string, Record<string, unknown>>[] };
  return doc.nftables
    .filter((o) => !('metainfo' in o))
    .map((o) => {
      const [k, v] = Object.entries(o)[0]!;
      const { handle: _h, ...rest } = v as Record<string, unknown>;
      return {
        [k]: JSON.parse(
          JSON.stringify(rest).replace(/"counter":\{"packets":\d+,"bytes":\d+\}/g, '"counter":{}'),
        ),
      };
    });
}

/**
 * A namespace's network state for before/after comparisons: nft ruleset,
 * iptables-save, links and addresses (normalised), ip_forward.
 */
export async function snapshot(
  ns: string,
): Promise<{ nft: unknown; iptables: string; links: unknown; addrs: unknown; ipForward: string }> {
  const nft = normNft((await nsRun(ns, ['nft', '-j', 'list', 'ruleset'])).stdout);
  const ipt = (await nsRun(ns, ['iptables-save'], { check: false })).stdout
    .split('\n')
    .filter((l) => !l.startsWith('#'))
    .map((l) => l.replace(/\[\d+:\d+\]/g, '[0:0]'))
    .join('\n');
  const links = (
    JSON.parse((await nsRun(ns, ['ip', '-j', 'link', 'show'])).stdout) as Array<
      Record<string, unknown>
    >
  ).map((l) => ({
    ifname: l.ifname,
    mtu: l.mtu,
    master: l.master,
    flags: l.flags,
    address: l.address,
  }));
  const addrs = (
    JSON.parse((await nsRun(ns, ['ip', '-j', 'addr', 'show'])).stdout) as Array<{
      ifname: string;
      addr_info: Array<{ local: string; prefixlen: number }>;
    }>
  ).map((l) => ({
    ifname: l.ifname,
    addrs: l.addr_info.map((a) => `${a.local}/${a.prefixlen}`).sort(),
  }));
  const ipForward = (await nsRun(ns, ['cat', '/proc/sys/net/ipv4/ip_forward'])).stdout.trim();
  return { nft, iptables: ipt, links, addrs, ipForward };
}

/** HTTP GET from inside a namespace (node's fetch); the body, or null on any failure. */
export async function httpGetIn(ns: string, url: string, timeoutMs = 5000): Promise<string | null> {
  const script =
    'fetch(process.argv[1],{signal:AbortSignal.timeout(Number(process.argv[2]))})' +
    '.then(async r=>{if(!r.ok)process.exit(2);process.stdout.write(await r.text())}).catch(()=>process.exit(1))';
  const r = await run(
    ['ip', 'netns', 'exec', ns, process.execPath, '-e', script, url, String(timeoutMs)],
    { check: false, timeoutMs: timeoutMs + 10_000 },
  );
  return r.code === 0 ? r.stdout : null;
}

/** Starts a small HTTP server answering `body` inside a namespace; it dies with the namespace. */
export async function serveIn(ns: string, port: number, body: string): Promise<void> {
  const script = `require('http').createServer((q,s)=>s.end(process.argv[2])).listen(Number(process.argv[1]),()=>console.log('listening'))`;
  const child = spawn(
    'ip',
    ['netns', 'exec', ns, process.execPath, '-e', script, String(port), body],
    { stdio: ['ignore', 'pipe', 'inherit'], detached: true },
  );
  child.unref();
  await new Promise<void>((resolve, reject) => {
    child.stdout!.once('data', () => resolve());
    child.once('exit', (c) => reject(new Error(`server in ${ns} exited ${c}`)));
  });
  child.stdout!.destroy();
}
