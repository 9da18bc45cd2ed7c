/**
 * bench/net.ts — `npm run bench:net`. Everything runs inside network
 * namespaces this script creates (test/helpers/netns.ts); nothing touches
 * the machine's own network.
 *
 * 1. expose/unexpose: 10 VMs defined on one network (each with its tap,
 *    MAC and reserved address; exposure needs no running guest, so none is
 *    booted), 20 cycles of exposing port 8000 of all 10 on host ports
 *    8001–8010 and unexposing them again; time per expose and per unexpose
 *    (library calls inside the namespace, plus one cycle through the CLI
 *    for the process start-up cost). Afterwards the namespace's ruleset,
 *    links and addresses must equal the ones from before.
 * 2. throughput host→guest over the bridge against QEMU user-mode
 *    networking, side by side in one run (see throughputBench below).
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { makeTopology, nsNestvirt, snapshot } from '../test/helpers/netns.js';
import { run } from '../src/util/exec.js';
import { createNetwork, removeNetwork } from '../src/net/network.js';
import { attachVm, releaseVm } from '../src/net/attach.js';
import { expose, unexpose } from '../src/net/expose.js';
import { throughputBench } from './net-throughput.js';

const VMS = 10;
const CYCLES = 20;

function stats(ms: number[]): string {
  const s = [...ms].sort((a, b) => a - b);
  const q = (p: number) => s[Math.min(s.length - 1, Math.floor(p * s.length))]!;
  const mean = s.reduce((a, b) => a + b, 0) / s.length;
  return `n=${s.length} mean ${mean.toFixed(1)} ms, median ${q(0.5).toFixed(1)} ms, p90 ${q(0.9).toFixed(1)} ms, max ${s[s.length - 1]!.toFixed(1)} ms`;
}

/** Runs inside the host namespace: the expose/unexpose cycles through the library. */
async function inside(home: string): Promise<void> {
  const ctx = { root: home, run, uid: 0 };
  await createNetwork(ctx, { name: 'bench', nat: true });
  const names = Array.from({ length: VMS }, (_, i) => `vm${i}`);
  const t0 = performance.now();
  for (const n of names) await attachVm(ctx, n, 'bench');
  const attachMs = (performance.now() - t0) / VMS;
  const ex: number[] = [];
  const un: number[] = [];
  for (let c = 0; c < CYCLES; c++) {
    for (const [i, n] of names.entries()) {
      const t = performance.now();
      await expose(ctx, { vm: n, port: 8000, proto: 'tcp', on: `:${8001 + i}` });
      ex.push(performance.now() - t);
    }
    for (const n of names) {
      const t = performance.now();
      await unexpose(ctx, n, 8000, 'tcp');
      un.push(performance.now() - t);
    }
  }
  for (const n of names) await releaseVm(ctx, n);
  await removeNetwork(ctx, 'bench');
  process.stdout.write(JSON.stringify({ attachMs, expose: ex, unexpose: un }) + '\n');
}

async function exposeBench(): Promise<void> {
  const topo = await makeTopology();
  const home = await mkdtemp(join(tmpdir(), 'nestvirt-bench-'));
  try {
    const before = await snapshot(topo.host);
    const self = fileURLToPath(import.meta.url);
    const out = await new Promise<string>((resolve, reject) => {
      const c = spawn(
        'ip',
        ['netns', 'exec', topo.host, process.execPath, self, '--inside', home],
        { stdio: ['ignore', 'pipe', 'inherit'] },
      );
      let s = '';
      c.stdout.on('data', (b: Buffer) => (s += b.toString()));
      c.on('close', (code) =>
        code === 0 ? resolve(s) : reject(new Error(`inside run exited ${code}`)),
      );
    });
    const r = JSON.parse(out.trim().split('\n').pop()!) as {
      attachMs: number;
      expose: number[];
      unexpose: number[];
    };
    console.log(
      `expose/unexpose, ${VMS} VMs on one network, ${CYCLES} cycles (library calls in the namespace; guests not booted):`,
    );
    console.log(`  define VM on network (tap + reservation): ${r.attachMs.toFixed(1)} ms per VM`);
    console.log(`  expose:   ${stats(r.expose)}`);
    console.log(`  unexpose: ${stats(r.unexpose)}`);
    // One cycle through the CLI (node start-up included), for scale.
    const nv = (a: string[]) => nsNestvirt(topo.host, home, a);
    await nv(['net', 'create', 'bench']);
    const ctxNames = Array.from({ length: VMS }, (_, i) => `vm${i}`);
    // Define the VMs' NICs through the library inside the namespace again.
    await new Promise<void>((resolve, reject) => {
      const c = spawn(
        'ip',
        [
          'netns',
          'exec',
          topo.host,
          process.execPath,
          fileURLToPath(import.meta.url),
          '--attach',
          home,
          ...ctxNames,
        ],
        { stdio: 'inherit' },
      );
      c.on('close', (code) =>
        code === 0 ? resolve() : reject(new Error(`attach exited ${code}`)),
      );
    });
    const cex: number[] = [];
    const cun: number[] = [];
    for (const [i, n] of ctxNames.entries()) {
      const t = performance.now();
      const r1 = await nv(['expose', n, '8000', '--on', `:${8001 + i}`]);
      if (r1.code !== 0) throw new Error(r1.stderr);
      cex.push(performance.now() - t);
    }
    for (const n of ctxNames) {
      const t = performance.now();
      const r2 = await nv(['unexpose', n, '8000']);
      if (r2.code !== 0) throw new Error(r2.stderr);
      cun.push(performance.now() - t);
    }
    console.log(`  CLI expose:   ${stats(cex)}   (one cycle, bin/nestvirt per call)`);
    console.log(`  CLI unexpose: ${stats(cun)}`);
    await new Promise<void>((resolve, reject) => {
      const c = spawn(
        'ip',
        [
          'netns',
          'exec',
          topo.host,
          process.execPath,
          fileURLToPath(import.meta.url),
          '--release',
          home,
          ...ctxNames,
        ],
        { stdio: 'inherit' },
      );
      c.on('close', (code) =>
        code === 0 ? resolve() : reject(new Error(`release exited ${code}`)),
      );
    });
    await nv(['net', 'rm', 'bench']);
    const after = await snapshot(topo.host);
    const same = JSON.stringify(after) === JSON.stringify(before);
    console.log(
      `  leftovers after all cycles: ${same ? 'none (nft ruleset, iptables, links, addresses, ip_forward as before)' : 'YES'}`,
    );
    if (!same) process.exitCode = 1;
  } finally {
    await topo.destroy();
    await rm(home, { recursive: true, force: true });
  }
}

const [mode, home, ...rest] = process.argv.slice(2);
if (mode === '--inside') await inside(home!);
else if (mode === '--attach')
  for (const n of rest) await attachVm({ root: home!, run, uid: 0 }, n, 'bench');
else if (mode === '--release') for (const n of rest) await releaseVm({ root: home!, run }, n);
else if (mode === '--throughput-only') await throughputBench();
else if (mode === '--expose-only') await exposeBench();
else if (!mode) {
  await throughputBench();
  await exposeBench();
}
