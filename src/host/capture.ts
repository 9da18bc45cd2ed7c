/**
 * `doctor --capture FILE`: this machine's relevant tree as a .tar.gz for bug
 * reports, laid out like / so `nestvirt doctor --root DIR` reads it after
 * `tar -xzf FILE -C DIR`. Holds only the files doctor reads (no serial
 * numbers or UUIDs), the kernel messages it used, `uname -a` and doctor's
 * own JSON. test/fixtures/host/capture.sh copies the same list in its guests.
 */
import { mkdtemp, mkdir, rm, stat, writeFile, copyFile } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import type { Runner } from '../util/exec.js';
import { HostRoot } from './root.js';
import { DMI_FIELDS } from './machine.js';
import { KVM_MODULES } from './modules.js';
import { FW_CFG_CHAIN_PATH } from './chain.js';
import type { DoctorReport } from './doctor.js';
import { UsageError } from '../errors.js';

/** Every file (relative to /) a capture holds, besides nestvirt/*. */
export function capturePaths(root: HostRoot): string[] {
  const paths = ['proc/cpuinfo', 'proc/modules', 'proc/cmdline', 'proc/version', 'proc/sysinfo'];
  for (const m of KVM_MODULES) {
    const dir = `sys/module/${m}`;
    if (!root.isDir(dir)) continue;
    paths.push(`${dir}/initstate`);
    for (const p of root.list(`${dir}/parameters`)) paths.push(`${dir}/parameters/${p}`);
  }
  for (const f of DMI_FIELDS) paths.push(`sys/class/dmi/id/${f}`);
  paths.push('sys/hypervisor/type', 'sys/hypervisor/uuid', FW_CFG_CHAIN_PATH);
  for (const e of root.list('sys/firmware/dmi/entries').filter((n) => n.startsWith('11-')))
    paths.push(`sys/firmware/dmi/entries/${e}/raw`);
  return paths;
}

const README = `nestvirt doctor capture
=======================
A copy of the files \`nestvirt doctor\` reads on the machine it ran on, laid
out like /. Analyse it anywhere with:

  mkdir tree && tar -xzf THIS.tar.gz -C tree && nestvirt doctor --root tree

nestvirt/doctor.json is doctor's report on the machine itself (with its
active KVM/TCG probes), nestvirt/dmesg.txt the kernel messages it used,
nestvirt/uname.txt \`uname -a\`. dev/kvm, when present, is a text stand-in.
`;

/** Writes the capture tarball; returns the number of files captured. */
export async function writeCapture(
  file: string,
  report: DoctorReport,
  run: Runner,
): Promise<number> {
  const out = resolve(file);
  try {
    const st = await stat(dirname(out));
    if (!st.isDirectory()) throw new Error('not a directory');
  } catch {
    throw new UsageError(
      'doctor.capture-dir',
      `--capture ${file}: directory ${dirname(out)} does not exist`,
      'give a path in an existing directory, e.g. --capture ./doctor.tar.gz',
    );
  }
  const root = new HostRoot('/');
  const stage = await mkdtemp(join(tmpdir(), 'nestvirt-capture-'));
  let n = 0;
  try {
    for (const rel of capturePaths(root)) {
      let data: Buffer;
      try {
        data = readFileSync(root.path(rel));
      } catch {
        continue; // absent or root-only
      }
      await mkdir(join(stage, dirname(rel)), { recursive: true });
      await writeFile(join(stage, rel), data);
      n++;
    }
    if (report.kvm.device) {
      await mkdir(join(stage, 'dev'), { recursive: true });
      const a = report.kvm.access;
      await writeFile(
        join(stage, 'dev/kvm'),
        `character device 10:232 (captured)${a ? ` mode ${a.mode} group ${a.group ?? '?'}` : ''}\n`,
      );
      n++;
    }
    await mkdir(join(stage, 'nestvirt'), { recursive: true });
    const uname = await run(['uname', '-a'], { check: false }).catch(() => undefined);
    await writeFile(join(stage, 'nestvirt/uname.txt'), uname?.stdout ?? '');
    await writeFile(join(stage, 'nestvirt/dmesg.txt'), report.kernel.messages.join('\n') + '\n');
    await writeFile(join(stage, 'nestvirt/doctor.json'), JSON.stringify(report, null, 2) + '\n');
    await writeFile(join(stage, 'nestvirt/README.txt'), README);
    n += 4;
    const tmp = `${out}.tmp-${process.pid}`;
    await run(['tar', '-czf', tmp, '--owner=0', '--group=0', '-C', stage, '.']);
    await copyFile(tmp, out);
    await rm(tmp, { force: true });
  } finally {
    await rm(stage, { recursive: true, force: true });
  }
  return n;
}
