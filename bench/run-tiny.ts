/**
 * bench:run — what `nestvirt run` costs on top of QEMU itself.
 *
 * 1. Time to ready: `nestvirt run tiny --wait` (wall time of the command,
 *    from spawn to exit) against a bare qemu-system-x86_64 command booting
 *    the same kernel and initrd, with the same accelerator and CPU, until
 *    the guest agent answers (the point --wait waits for). N runs each,
 *    interleaved; medians, the ratio and the overhead in ms.
 *    Targets (issue #3): overhead <= 5% and <= 150 ms.
 * 2. `nestvirt ls --json` with 200 VMs defined (target < 150 ms), with bare
 *    `node -e 0` start-up measured alongside for scale.
 * 3. QEMU RSS of a running tiny VM.
 *
 *   npm run bench:run            # N=5
 *   BENCH_N=9 npm run bench:run
 */
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { seedImage } from '../test/helpers/images.js';
import { BIN } from '../test/helpers/cli.js';
import { QgaClient } from '../src/vm/qga.js';
import { createVm } from '../src/vm/lifecycle.js';
import { run } from '../src/util/exec.js';
import { qemuFeatures } from '../src/vm/features.js';
import { hostVerdict, chooseAccel } from '../src/vm/host.js';
import { cpuModel } from '../src/vm/qemu-argv.js';

const N = Number(process.env.BENCH_N ?? 5);

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

function exec(
  argv: string[],
  env: NodeJS.ProcessEnv,
): Promise<{ code: number; ms: number; stdout: string; stderr: string }> {
  const t0 = performance.now();
  return new Promise((resolve) => {
    const c = spawn(argv[0]!, argv.slice(1), {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    let stdout = '';
    c.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
    c.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    c.on('close', (code) =>
      resolve({ code: code ?? -1, ms: performance.now() - t0, stdout, stderr }),
    );
  });
}

async function bareBoot(
  dir: string,
  kernel: string,
  initrd: string,
  append: string,
  accel: string,
  cpu: string,
): Promise<number> {
  const qga = join(dir, 'qga.sock');
  const t0 = performance.now();
  const q = spawn(
    'qemu-system-x86_64',
    [
      '-machine',
      'q35',
      '-accel',
      accel === 'tcg' ? 'tcg,thread=multi' : 'kvm',
      '-cpu',
      cpu,
      '-smp',
      '1',
      '-m',
      '512M',
      '-nodefaults',
      '-no-user-config',
      '-display',
      'none',
      '-kernel',
      kernel,
      '-initrd',
      initrd,
      '-append',
      append,
      '-netdev',
      'user,id=n0',
      '-device',
      'virtio-net-pci,netdev=n0',
      // the same entropy source nestvirt gives its guests (without it the guest's CRNG starts late under TCG)
      '-device',
      'virtio-rng-pci',
      '-serial',
      `file:${join(dir, 'serial.log')}`,
      '-chardev',
      `socket,id=qga0,path=${qga},server=on,wait=off`,
      '-device',
      'virtio-serial-pci',
      '-device',
      'virtserialport,chardev=qga0,name=org.qemu.guest_agent.0',
    ],
    { stdio: 'ignore' },
  );
  try {
    // The same wait `nestvirt run --wait` uses (QgaClient.waitForAgent), so
    // both sides see the agent's first answer at the same moment.
    await QgaClient.waitForAgent(qga, {
      timeoutMs: 120_000,
      check: () => {
        if (q.exitCode !== null) throw new Error('bare QEMU exited');
      },
    });
    return performance.now() - t0;
  } finally {
    q.kill('SIGKILL');
    await new Promise((r) => (q.exitCode !== null ? r(null) : q.once('exit', r)));
  }
}

async function rssKiB(pid: number): Promise<number> {
  const m = /VmRSS:\s+(\d+)/.exec(await readFile(`/proc/${pid}/status`, 'utf8'));
  return Number(m?.[1] ?? 0);
}

async function main(): Promise<void> {
  const home = await mkdtemp(join(tmpdir(), 'nv-bench-'));
  const env = { NESTVIRT_HOME: home, NO_COLOR: '1' };
  const tiny = await seedImage(home, 'tiny');
  const features = await qemuFeatures(home, run, process.env);
  const hv = await hostVerdict(home, run, process.env);
  const accel = chooseAccel('auto', false, hv, features).accel;
  const cpu = cpuModel(accel, false, features);
  console.log(
    `nestvirt bench: run tiny --wait vs bare QEMU; ${N} runs each, interleaved; accel ${accel}, -cpu ${cpu}`,
  );

  // Warm-up (not counted): fills nestvirt's caches (QEMU features, host verdict) and the page cache.
  const w = await exec([BIN, 'run', 'tiny', '--name', 'warm', '--wait'], env);
  if (w.code !== 0) throw new Error(`warm-up failed: ${w.stderr}`);
  const ls = JSON.parse(
    (await run([BIN, 'ls', '--json'], { env: { ...process.env, ...env } })).stdout,
  ) as { vms: { pid: number }[] };
  const rss = [await rssKiB(ls.vms[0]!.pid)];
  await exec([BIN, 'rm', '--force', 'warm'], env);

  const nv: number[] = [];
  const own: number[] = [];
  const bare: number[] = [];
  for (let i = 0; i < N; i++) {
    const r = await exec([BIN, 'run', 'tiny', '--name', `b${i}`, '--wait', '--json'], env);
    if (r.code !== 0) throw new Error(`nestvirt run failed: ${r.stderr}`);
    nv.push(r.ms);
    // nestvirt's own share: the command's wall time minus QEMU's start-to-ready (readyMs).
    own.push(r.ms - (JSON.parse(r.stdout) as { readyMs: number }).readyMs);
    const l = JSON.parse(
      (
        await run([BIN, 'info', `b${i}`, '--json'], {
          env: { ...process.env, ...env },
        })
      ).stdout,
    ) as { pid: number };
    rss.push(await rssKiB(l.pid));
    await exec([BIN, 'rm', '--force', `b${i}`], env);
    const d = await mkdtemp(join(tmpdir(), 'nv-bare-'));
    bare.push(await bareBoot(d, tiny.kernel!, tiny.initrd!, tiny.cmdline ?? '', accel, cpu));
    await rm(d, { recursive: true, force: true });
    console.log(
      `  run ${i + 1}/${N}: nestvirt ${(nv[i]! / 1000).toFixed(2)} s (its own share ${own[i]!.toFixed(0)} ms), bare ${(bare[i]! / 1000).toFixed(2)} s`,
    );
  }
  const mN = median(nv);
  const mB = median(bare);
  const over = mN - mB;
  const ratio = mN / mB;
  console.log('');
  console.log(
    `time to ready (median of ${N}): nestvirt ${(mN / 1000).toFixed(3)} s, bare QEMU ${(mB / 1000).toFixed(3)} s`,
  );
  console.log(
    `  ratio ${ratio.toFixed(3)} (${((ratio - 1) * 100).toFixed(1)}%), overhead ${over.toFixed(0)} ms  [targets: <= 5% and <= 150 ms: ${ratio <= 1.05 && over <= 150 ? 'met' : 'NOT met'}]`,
  );
  console.log(
    `  spread: nestvirt ${(Math.min(...nv) / 1000).toFixed(2)}-${(Math.max(...nv) / 1000).toFixed(2)} s, bare ${(Math.min(...bare) / 1000).toFixed(2)}-${(Math.max(...bare) / 1000).toFixed(2)} s`,
  );
  console.log(
    `  nestvirt's own share (command wall time - QEMU start-to-ready, same run): median ${median(own).toFixed(0)} ms = ${((median(own) / mB) * 100).toFixed(1)}% of bare  [targets: ${median(own) <= 150 && median(own) / mB <= 0.05 ? 'met' : 'NOT met'}]`,
  );
  console.log(
    `  load average during the bench: ${(await readFile('/proc/loadavg', 'utf8')).split(' ').slice(0, 3).join(' ')} on ${(await import('node:os')).availableParallelism()} CPUs`,
  );
  console.log(
    `QEMU RSS per running tiny VM (512M guest, ${accel}): median ${(median(rss) / 1024).toFixed(0)} MiB (${rss.map((k) => (k / 1024).toFixed(0)).join(', ')})`,
  );

  // ls with 200 VMs defined.
  for (let i = 0; i < 200; i++)
    await createVm(
      {
        name: `ls${String(i).padStart(3, '0')}`,
        kernel: tiny.kernel!,
        initrd: tiny.initrd!,
        cpus: 1,
        memoryMiB: 256,
        nested: false,
        accel: 'auto',
        nics: [{ kind: 'user', forwards: [] }],
      },
      { root: home, run, env: process.env },
    );
  const lsT: number[] = [];
  const nodeT: number[] = [];
  for (let i = 0; i < 10; i++) {
    const r = await exec([BIN, 'ls', '--json'], env);
    if (r.code !== 0) throw new Error(r.stderr);
    lsT.push(r.ms);
    nodeT.push((await exec([process.execPath, '-e', '0'], env)).ms);
  }
  const verT: number[] = [];
  for (let i = 0; i < 10; i++) verT.push((await exec([BIN, 'version'], env)).ms);
  console.log(
    `start-up alone, same run (median of 10): \`node -e 0\` ${median(nodeT).toFixed(0)} ms, \`nestvirt version\` (node + loading every command's modules) ${median(verT).toFixed(0)} ms`,
  );
  console.log(
    `  so of nestvirt's own share in \`run --wait\` (${median(own).toFixed(0)} ms), ${median(verT).toFixed(0)} ms is process start-up; the VM work itself is ~${Math.max(0, median(own) - median(verT)).toFixed(0)} ms`,
  );
  console.log(
    `nestvirt ls --json, 200 VMs (median of 10): ${median(lsT).toFixed(0)} ms  [target < 150 ms: ${median(lsT) < 150 ? 'met' : 'NOT met'}]; bare \`node -e 0\`: ${median(nodeT).toFixed(0)} ms`,
  );
  await rm(home, { recursive: true, force: true });
}

await main();
