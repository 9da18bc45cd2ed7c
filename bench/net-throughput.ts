/**
 * Host↔guest throughput: a tiny VM on a nestvirt bridge (tap) against a
 * tiny VM on QEMU user-mode networking (a --port forward), side by side in
 * one run, inside namespaces this script creates. The guest end is busybox
 * `nc` (a sink for host→guest, timed in the guest with `time` until the last
 * byte; a source for guest→host); the host end is a node socket (a sender,
 * or a receiver timing first to last byte). The guest always connects, so
 * both modes take the same path through the guest's stack. Under TCG the guest's CPU is the
 * bottleneck, so the figures say more about the ratio than about wire speed.
 */
import { createServer } from 'node:net';
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

/** Inside the namespace: serve SIZE bytes to one client, then close. */
async function serveBytes(port: number, ready: () => void): Promise<void> {
  const chunk = Buffer.alloc(256 * 1024, 0x5a);
  return new Promise((resolve) => {
    const srv = createServer((c) => {
      let left = SIZE;
      const pump = (): void => {
        while (left > 0) {
          left -= chunk.length;
          if (!c.write(chunk)) return void c.once('drain', pump);
        }
        c.end();
      };
      c.on('error', () => {});
      c.on('close', () => {
        srv.close();
        resolve();
      });
      pump();
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
  hostFromGuest: string,
): Promise<{ in: number; out: number }> {
  const nv = (a: string[]) => nsNestvirt(ns, home, a);
  const inRates: number[] = [];
  const outRates: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    // host → guest, timed by the guest until the last byte: a sender in the namespace, the guest's nc as the sink.
    const srv = inNs(ns, ['--serve', '5001']);
    srv.catch(() => {}); // awaited below; never an unhandled rejection
    await new Promise((r) => setTimeout(r, 1500));
    const sink = await nv([
      'exec',
      vm,
      '--timeout',
      '300',
      '--',
      'sh',
      '-c',
      // busybox nc quits soon after its stdin ends: hold stdin open with a fifo.
      `rm -f /tmp/nvf; mkfifo /tmp/nvf; sleep 600 > /tmp/nvf & s=$!; time -p sh -c 'nc ${hostFromGuest} 5001 < /tmp/nvf | wc -c'; kill $s`,
    ]);
    await srv;
    const real = /real\s+([\d.]+)/.exec(sink.stderr + sink.stdout);
    const got = Number(/^\s*(\d+)/m.exec(sink.stdout)?.[1] ?? 0);
    if (sink.code !== 0 || !real || got !== SIZE)
      throw new Error(`guest sink failed: ${sink.stdout} ${sink.stderr}`);
    inRates.push(SIZE / MB / Math.max(Number(real[1]), 0.01));
    // guest → host: a receiver in the namespace, the guest's nc as the source.
    const recv = inNs(ns, ['--recv', '5002']);
    recv.catch(() => {});
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
      ['run', 'tiny', '--name', 'tp-user', '--net', 'user', '--wait', '--wait-timeout', '600'],
    ]) {
      const r = await nv(a);
      if (r.code !== 0) throw new Error(`${a.join(' ')}: ${r.stderr}`);
    }
    let ip = ''; // the bridge VM must hold its DHCP lease before measuring
    for (let i = 0; i < 60 && !ip; i++) {
      const info = JSON.parse((await nv(['info', 'tp-bridge', '--json'])).stdout) as {
        addresses: { ip: string; source: string }[];
      };
      if (info.addresses[0]?.source === 'lease') ip = info.addresses[0].ip;
      else await new Promise((r) => setTimeout(r, 1000));
    }
    const gw = JSON.parse((await nv(['net', 'ls', '--json'])).stdout).networks[0].gateway as string;
    const bridge = await measure(topo.host, home, 'tp-bridge', gw);
    // User-mode: the guest reaches the host's namespace through slirp's 10.0.2.2.
    const user = await measure(topo.host, home, 'tp-user', '10.0.2.2');
    if (!ip) throw new Error('tp-bridge got no DHCP lease');
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
const [mode, a1] = process.argv.slice(2);
if (mode === '--serve') await serveBytes(Number(a1), () => console.log('listening'));
else if (mode === '--recv') {
  const r = await receiveOn(Number(a1), () => console.log('listening'));
  console.log(JSON.stringify(r));
}
