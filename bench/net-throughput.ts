/**
 * Host↔guest throughput: a tiny VM on a nestvirt bridge (tap) against a
 * tiny VM on QEMU user-mode networking (a --port forward), side by side in
 * one run, inside namespaces this script creates. The guest end is busybox
 * `nc` (a sink for host→guest, a source for guest→host); the host end is a
 * node socket that counts bytes and time. Under TCG the guest's CPU is the
 * bottleneck, so the figures say more about the ratio than about wire speed.
 */
import { createConnection, createServer } from 'node:net';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { makeTopology, nsNestvirt, snapshot } from '../test/helpers/netns.js';
import { seedImage } from '../test/helpers/images.js';

const MB = 1024 * 1024;
const SIZE = 16 * MB;
const RUNS = 3;

/** Inside the namespace: send SIZE bytes to host:port, print seconds until the peer closed. */
async function sendTo(host: string, port: number): Promise<number> {
  const chunk = Buffer.alloc(256 * 1024, 0x5a);
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const s = createConnection({ host, port }, () => {
      let left = SIZE;
      const pump = (): void => {
        while (left > 0) {
          left -= chunk.length;
          if (!s.write(chunk)) return void s.once('drain', pump);
        }
        s.end();
      };
      pump();
    });
    s.on('error', reject);
    s.on('close', () => resolve((performance.now() - t0) / 1000));
    s.resume();
  });
}

/** Inside the namespace: accept one connection on port, print {bytes, seconds}. */
async function receiveOn(port: number, ready: () => void): Promise<{ bytes: number; s: number }> {
  return new Promise((resolve) => {
    const srv = createServer((c) => {
      let bytes = 0;
      let t0 = 0;
      let t1 = 0;
      // First to last byte: busybox nc may keep the connection open after its input ends.
      c.on('data', (b: Buffer) => {
        if (!t0) t0 = performance.now();
        t1 = performance.now();
        bytes += b.length;
        if (bytes >= SIZE) c.destroy();
      });
      c.on('close', () => {
        srv.close();
        resolve({ bytes, s: (t1 - t0) / 1000 });
      });
    });
    srv.listen(port, '0.0.0.0', ready);
  });
}

function inNs(ns: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const c = spawn(
      'ip',
      ['netns', 'exec', ns, process.execPath, fileURLToPath(import.meta.url), ...args],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    let out = '';
    c.stdout.on('data', (b: Buffer) => {
      out += b.toString();
      if (out.includes('listening\n')) c.emit('listening');
    });
    c.on('close', (code) =>
      code === 0 ? resolve(out) : reject(new Error(`${args.join(' ')} exited ${code}`)),
    );
  });
}

/** Host→guest then guest→host for one VM; returns MB/s medians. */
async function measure(
  ns: string,
  home: string,
  vm: string,
  guestSinkAddr: { host: string; port: number },
  hostFromGuest: string,
): Promise<{ in: number; out: number }> {
  const nv = (a: string[]) => nsNestvirt(ns, home, a);
  const inRates: number[] = [];
  const outRates: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const l = await nv(['exec', vm, '--', 'sh', '-c', 'nc -l -p 5001 > /dev/null 2>&1 &']);
    if (l.code !== 0) throw new Error(l.stderr);
    await new Promise((r) => setTimeout(r, 1500));
    const secs = Number(
      (await inNs(ns, ['--send', guestSinkAddr.host, String(guestSinkAddr.port)])).trim(),
    );
    inRates.push(SIZE / MB / secs);
    // guest → host: a receiver in the namespace, the guest's nc as the source.
    const recv = inNs(ns, ['--recv', '5002']);
    await new Promise((r) => setTimeout(r, 1000));
    const src = await nv([
      'exec',
      vm,
      '--timeout',
      '300',
      '--',
      'sh',
      '-c',
      `dd if=/dev/zero bs=65536 count=${SIZE / 65536} 2>/dev/null | nc ${hostFromGuest} 5002`,
    ]);
    if (src.code !== 0) throw new Error(src.stderr);
    const r = JSON.parse((await recv).trim().split('\n').pop()!) as { bytes: number; s: number };
    outRates.push(r.bytes / MB / r.s);
  }
  const med = (a: number[]) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)]!;
  return { in: med(inRates), out: med(outRates) };
}

export async function throughputBench(): Promise<void> {
  const topo = await makeTopology();
  const home = await mkdtemp(join(tmpdir(), 'nestvirt-bench-tp-'));
  await chmod(home, 0o755);
  try {
    await seedImage(home, 'tiny');
    const before = await snapshot(topo.host);
    const nv = (a: string[]) => nsNestvirt(topo.host, home, a);
    for (const a of [
      ['net', 'create', 'tp'],
      ['run', 'tiny', '--name', 'tp-bridge', '--net', 'tp', '--wait', '--wait-timeout', '600'],
      [
        'run',
        'tiny',
        '--name',
        'tp-user',
        '--net',
        'user',
        '--port',
        '5001:5001',
        '--wait',
        '--wait-timeout',
        '600',
      ],
    ]) {
      const r = await nv(a);
      if (r.code !== 0) throw new Error(`${a.join(' ')}: ${r.stderr}`);
    }
    let ip = '';
    for (let i = 0; i < 60 && !ip; i++) {
      const info = JSON.parse((await nv(['info', 'tp-bridge', '--json'])).stdout) as {
        addresses: { ip: string; source: string }[];
      };
      if (info.addresses[0]?.source === 'lease') ip = info.addresses[0].ip;
      else await new Promise((r) => setTimeout(r, 1000));
    }
    const gw = JSON.parse((await nv(['net', 'ls', '--json'])).stdout).networks[0].gateway as string;
    const bridge = await measure(topo.host, home, 'tp-bridge', { host: ip, port: 5001 }, gw);
    // User-mode: host→guest through the --port forward on 127.0.0.1; guest→host via slirp's 10.0.2.2.
    const user = await measure(
      topo.host,
      home,
      'tp-user',
      { host: '127.0.0.1', port: 5001 },
      '10.0.2.2',
    );
    console.log(
      `throughput host↔guest, ${SIZE / MB} MiB per transfer, median of ${RUNS}, tiny under TCG:`,
    );
    console.log(
      `  bridge (tap on nv-tp):      host→guest ${bridge.in.toFixed(1)} MiB/s, guest→host ${bridge.out.toFixed(1)} MiB/s`,
    );
    console.log(
      `  user-mode (QEMU slirp):     host→guest ${user.in.toFixed(1)} MiB/s, guest→host ${user.out.toFixed(1)} MiB/s`,
    );
    console.log(
      `  ratio bridge / user-mode:   host→guest ×${(bridge.in / user.in).toFixed(2)}, guest→host ×${(bridge.out / user.out).toFixed(2)}`,
    );
    await nv(['rm', '--force', 'tp-bridge', 'tp-user']);
    await nv(['net', 'rm', 'tp']);
    const same = JSON.stringify(await snapshot(topo.host)) === JSON.stringify(before);
    console.log(`  leftovers: ${same ? 'none' : 'YES'}`);
    if (!same) process.exitCode = 1;
  } finally {
    await nsNestvirt(topo.host, home, ['rm', '--force', 'tp-bridge', 'tp-user']).catch(() => {});
    await topo.destroy();
    await rm(home, { recursive: true, force: true });
  }
}

// Helper modes, run inside the namespace by the functions above.
const [mode, a1, a2] = process.argv.slice(2);
if (mode === '--send') console.log(String(await sendTo(a1!, Number(a2))));
else if (mode === '--recv') {
  const r = await receiveOn(Number(a1), () => console.log('listening'));
  console.log(JSON.stringify(r));
}
