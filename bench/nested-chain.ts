/**
 * bench/nested-chain: time from `nestvirt demo` starting to the innermost
 * VM's process reporting (this machine → TCG VM with SVM → KVM VM), with a
 * breakdown per level, against a baseline measured in the same run: the
 * bare QEMU boot times of the same images to their guest agent (the
 * `hypervisor` image and the `tiny` image, each booted by a plain
 * qemu-system-x86_64 under TCG on this machine). Runs interleave so machine
 * load hits both alike.
 *
 * Target (issue 4): the innermost process within 20 s on this machine.
 * Usage: node dist/bench/nested-chain.js [RUNS=3]
 */
import { spawn } from 'node:child_process';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { testImage, seedImage, TEST_CACHE } from '../test/helpers/images.js';
import { bootGuest, Qga } from '../test/integration/image-guest.js';
import { tempHome, BIN } from '../test/helpers/cli.js';
import { run } from '../src/util/exec.js';
import type { ImageSpec } from '../src/image/types.js';
import { READY_MARKER } from '../src/image/recipe.js';
import type { DemoResult } from '../src/demo/demo.js';

const RUNS = Number(process.argv[2] ?? 3);

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.floor(s.length / 2)]! : NaN;
}
const sec = (ms: number): string => `${(ms / 1000).toFixed(2)} s`;

/** A qcow2 overlay in dir over the image's disk (the base is never written). */
async function overlayOf(spec: ImageSpec, dir: string): Promise<string> {
  const overlay = join(dir, 'overlay.qcow2');
  const base = ['-F', spec.diskFormat ?? 'raw', '-b', spec.disk!];
  await run(['qemu-img', 'create', '-q', '-f', 'qcow2', ...base, overlay]);
  return overlay;
}

async function bareBoot(spec: ImageSpec): Promise<number> {
  const g0 = spec.disk ? await tempHome('nestvirt-bench-ov-') : undefined;
  const overlay = g0 ? await overlayOf(spec, g0) : undefined;
  const g = await bootGuest(spec, {
    memMiB: spec.minMemoryMiB ?? 256,
    ...(overlay ? { overlay } : {}),
  });
  try {
    const q = await Qga.connect(g.qgaSock, 300_000, g.proc);
    const ms = performance.now() - g.startedAt;
    q.close();
    return ms;
  } finally {
    await g.stop();
    if (g0) await rm(g0, { recursive: true, force: true });
  }
}

/**
 * The hand-made chain the issue compares with: a bare hypervisor boot (TCG,
 * same size as the demo's outer VM), then inside it a bare
 * qemu-system-x86_64 booting the tiny image under KVM, timed in the guest
 * from QEMU's start to tiny's ready marker on its serial console (a little
 * before its guest agent answers, so this favours the baseline).
 */
async function handMadeChain(
  hvSpec: ImageSpec,
  tinySpec: ImageSpec,
): Promise<{ outer: number; inner: number }> {
  const g0 = await tempHome('nestvirt-bench-ov-');
  const overlay = await overlayOf(hvSpec, g0);
  const g = await bootGuest(hvSpec, { memMiB: 2048, overlay, extraArgs: ['-smp', '2'] });
  try {
    const q = await Qga.connect(g.qgaSock, 300_000, g.proc);
    const outer = performance.now() - g.startedAt;
    try {
      const d = '/var/lib/nestvirt/images/tiny';
      const script = [
        'rm -f /tmp/bare.log; t0=$(cut -d" " -f1 /proc/uptime)',
        `qemu-system-x86_64 -M q35 -accel kvm -cpu host -m 256M -smp 1 -nodefaults -no-user-config -display none -kernel ${d}/vmlinux -initrd ${d}/initrd.img -append '${tinySpec.cmdline ?? ''}' -serial file:/tmp/bare.log -device virtio-rng-pci -device virtio-serial-pci & p=$!`,
        `n=0; until grep -q ${READY_MARKER} /tmp/bare.log 2>/dev/null; do sleep 0.05; n=$((n+1)); [ $n -gt 3000 ] && break; done`,
        't1=$(cut -d" " -f1 /proc/uptime); kill $p; echo "$t0 $t1"',
      ].join('\n');
      const r = await q.exec(script, 300_000);
      const [t0, t1] = r.out.trim().split(/\s+/).map(Number);
      if (!(t1! > t0!)) throw new Error(`hand-made inner boot failed: ${r.out} ${r.err}`);
      return { outer, inner: (t1! - t0!) * 1000 };
    } finally {
      q.close();
    }
  } finally {
    await g.stop();
    await rm(g0, { recursive: true, force: true });
  }
}

function demo(home: string): Promise<DemoResult> {
  return new Promise((resolve, reject) => {
    const c = spawn(BIN, ['demo', '--json'], {
      env: { ...process.env, NESTVIRT_HOME: home, NESTVIRT_CACHE: TEST_CACHE, NO_COLOR: '1' },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    c.stdout.on('data', (b: Buffer) => (out += b.toString()));
    c.on('error', reject);
    c.on('close', () => {
      try {
        resolve(JSON.parse(out) as DemoResult);
      } catch {
        reject(new Error(`demo printed no JSON: ${out.slice(-300)}`));
      }
    });
  });
}

const tiny = (await testImage('tiny')).spec;
const hv = (await testImage('hypervisor')).spec;
const rows: {
  total: number;
  outer: number;
  doctor: number;
  inner: number;
  proc: number;
  images: number;
}[] = [];
const bareHv: number[] = [];
const bareTiny: number[] = [];
const handOuter: number[] = [];
const handInner: number[] = [];
for (let i = 0; i < RUNS; i++) {
  bareHv.push(await bareBoot(hv));
  bareTiny.push(await bareBoot(tiny));
  const hand = await handMadeChain(hv, tiny);
  handOuter.push(hand.outer);
  handInner.push(hand.inner);
  const home = await tempHome('nestvirt-bench-demo-');
  try {
    await seedImage(home, 'tiny');
    await seedImage(home, 'hypervisor');
    const d = await demo(home);
    if (!d.ok || d.toInnermostMs === null)
      throw new Error(`demo failed: ${JSON.stringify(d.steps.find((s) => !s.ok))}`);
    const ms = (id: string): number => d.steps.find((s) => s.id === id)?.ms ?? NaN;
    rows.push({
      total: d.toInnermostMs,
      images: ms('images'),
      outer: ms('outer'),
      doctor: ms('outer-doctor'),
      inner: ms('inner'),
      proc: ms('process'),
    });
    process.stdout.write(
      `run ${i + 1}: innermost process at ${sec(d.toInnermostMs)}; bare hypervisor ${sec(bareHv[i]!)}, bare tiny ${sec(bareTiny[i]!)}; hand-made chain ${sec(hand.outer)} + ${sec(hand.inner)}\n`,
    );
  } finally {
    await rm(home, { recursive: true, force: true });
  }
}
const m = (k: keyof (typeof rows)[number]): number => median(rows.map((r) => r[k]));
const bareSum = median(bareHv) + median(bareTiny);
console.log(`\nnested chain, median of ${RUNS} runs (this machine → TCG L+1 with SVM → KVM L+2):`);
console.log(
  `  time to the innermost process   ${sec(m('total'))}   (target < 20 s: ${m('total') < 20_000 ? 'met' : 'NOT met'})`,
);
console.log(`    images check                  ${sec(m('images'))}`);
console.log(`    outer VM (TCG) to ready       ${sec(m('outer'))}`);
console.log(`    nestvirt doctor in the outer  ${sec(m('doctor'))}`);
console.log(
  `    inner VM (KVM) to ready       ${sec(m('inner'))}   (nestvirt run inside the outer VM)`,
);
console.log(`    process in the inner VM       ${sec(m('proc'))}`);
console.log(`  baseline, bare QEMU boots to the guest agent, same images, same run:`);
console.log(`    hypervisor (TCG)              ${sec(median(bareHv))}`);
console.log(`    tiny (TCG)                    ${sec(median(bareTiny))}`);
console.log(`  ratio demo / (bare hypervisor + bare tiny)  ${(m('total') / bareSum).toFixed(2)}`);
const handSum = median(handOuter) + median(handInner);
console.log(`  baseline, the hand-made chain (bare QEMU in bare QEMU), same images, same run:`);
console.log(`    hypervisor (TCG, 2 vCPUs, 2 GiB) to its agent   ${sec(median(handOuter))}`);
console.log(`    tiny under KVM inside it, to its ready marker  ${sec(median(handInner))}`);
console.log(
  `  ratio demo / hand-made chain (${sec(handSum)})  ${(m('total') / handSum).toFixed(2)}; nestvirt adds ${sec(m('total') - handSum)}`,
);
