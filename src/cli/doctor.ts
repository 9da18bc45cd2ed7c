import type { Command } from './command.js';
import { trace } from '../util/trace.js';
import { bool, str } from './command.js';
import { eprintln, paint, printJson, println } from './output.js';
import { runDoctor } from '../host/doctor.js';
import { saveHostVerdict, verdictFrom } from '../vm/host.js';
import { qemuFeatures } from '../vm/features.js';
import { stateRoot } from '../state/paths.js';
import { renderDoctor } from '../host/render.js';
import { writeCapture } from '../host/capture.js';
import { libvirtSummary } from '../libvirt/index.js';
import { renderLibvirtSummary } from '../libvirt/render.js';
import { UsageError, ExitCode } from '../errors.js';
import { statSync, accessSync, constants } from 'node:fs';

export const doctorCommand: Command = {
  name: 'doctor',
  summary: 'what this machine can do: accelerated VMs, nested VMs, and the fix for each problem',
  usage: 'doctor [--json] [--root DIR] [--capture FILE] [--no-probe]',
  description: [
    'Reads the CPU, the machine (bare metal or which hypervisor/cloud), its level, the KVM',
    'modules and their nested parameter, /dev/kvm, and proves KVM works by booting a tiny',
    'guest (and the QEMU TCG fallback). Exit 0 when accelerated VMs run here, 1 when not.',
    '',
    'examples:',
    '  nestvirt doctor',
    '  nestvirt doctor --json | jq .verdict',
    '  nestvirt doctor --capture doctor.tar.gz      # attach this to bug reports',
    '  mkdir t && tar -xzf doctor.tar.gz -C t && nestvirt doctor --root t',
  ].join('\n'),
  positionals: [0, 0],
  flags: {
    json: { type: 'boolean', help: 'print the report as JSON (schema: docs/doctor.md)' },
    root: {
      type: 'string',
      arg: 'DIR',
      help: 'analyse a captured tree laid out like / (no active probe)',
    },
    capture: {
      type: 'string',
      arg: 'FILE',
      help: "write this machine's tree as a .tar.gz for bug reports",
    },
    'no-probe': { type: 'boolean', help: 'skip the active KVM/TCG probes (faster, less certain)' },
  },
  async run(args, ctx) {
    const root = str(args, 'root');
    const capture = str(args, 'capture');
    const json = bool(args, 'json');
    if (root !== undefined && capture !== undefined)
      throw new UsageError(
        'usage.conflict',
        'doctor: --capture captures this machine; it cannot be combined with --root',
        'drop one of them',
      );
    if (root !== undefined) {
      let isDir = false;
      try {
        isDir = statSync(root).isDirectory();
        accessSync(root, constants.R_OK | constants.X_OK);
      } catch {
        throw new UsageError(
          'doctor.bad-root',
          `--root ${root}: not a readable directory`,
          'point --root at an unpacked capture (a directory with proc/cpuinfo)',
        );
      }
      if (!isDir)
        throw new UsageError(
          'doctor.bad-root',
          `--root ${root}: not a directory`,
          'unpack a capture first: mkdir t && tar -xzf FILE -C t',
        );
    }
    // `run` usually comes next: fill its QEMU feature cache alongside the
    // probes (four short QEMU starts) rather than at the start of that run.
    const live = root === undefined && !bool(args, 'no-probe');
    const warm = live
      ? qemuFeatures(stateRoot(ctx.env, ctx.uid), ctx.run, ctx.env).catch(() => undefined)
      : undefined;
    const report = await runDoctor({
      run: ctx.run,
      env: ctx.env,
      ...(root !== undefined ? { root } : {}),
      probe: live,
      onStep: (t) => {
        if (!json && ctx.out.interactive) eprintln(ctx.out, paint(ctx.out, 'gray', `… ${t}`));
      },
    });
    await warm;
    trace('doctor: report made');
    // A live, probed verdict is what `run` would compute: cache it for the next run.
    if (live)
      await saveHostVerdict(stateRoot(ctx.env, ctx.uid), verdictFrom(report, report.verdict));
    if (capture !== undefined) {
      const n = await writeCapture(capture, report, ctx.run);
      if (!json)
        println(ctx.out, `captured ${n} files to ${capture}: attach it to your bug report`);
    }
    // libvirt guests (src/libvirt): live machine only, and only when virsh is installed.
    const libvirt =
      root === undefined ? await libvirtSummary({ run: ctx.run, env: ctx.env }) : undefined;
    trace('doctor: libvirt summary');
    if (json) printJson(ctx.out, libvirt?.present ? { ...report, libvirt } : report);
    else {
      ctx.out.stdout.write(renderDoctor(report, ctx.out));
      if (libvirt?.present) ctx.out.stdout.write(renderLibvirtSummary(libvirt, ctx.out));
    }
    return report.verdict.acceleratedVMs ? ExitCode.OK : ExitCode.NOT_POSSIBLE;
  },
};
