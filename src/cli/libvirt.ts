/**
 * `nestvirt libvirt ls | nest DOMAIN | unnest DOMAIN`: libvirt guests that
 * can (or cannot) run VMs of their own, and the surgical XML change that
 * makes them. The work is in src/libvirt/.
 */
import { readFile } from 'node:fs/promises';
import type { Command, Context, ParsedArgs } from './command.js';
import { bool, str } from './command.js';
import { eprintln, paint, printJson, println, table, Progress, type Output } from './output.js';
import { NestvirtError, UsageError } from '../errors.js';
import { stateRoot } from '../state/paths.js';
import { writeAtomic } from '../state/store.js';
import { colorDiff, unifiedDiff } from '../libvirt/diff.js';
import { listDomains, nestDomain, planNest, powerCycle, unnestDomain } from '../libvirt/domains.js';
import { localHost } from '../libvirt/host.js';
import { CPU_MODES, type CpuMode } from '../libvirt/types.js';
import { resolveUri, Virsh } from '../libvirt/virsh.js';

const connectFlag = {
  type: 'string',
  arg: 'URI',
  help: 'libvirt URI (default: $LIBVIRT_DEFAULT_URI, else qemu:///system)',
} as const;
const jsonFlag = (what: string) =>
  ({ type: 'boolean', help: `print ${what} as JSON (schema: docs/libvirt.md)` }) as const;
const rootFlag = {
  type: 'string',
  arg: 'DIR',
  help: "read the host's /proc and /sys under DIR (a captured tree; default /)",
} as const;
const timeoutFlag = {
  type: 'string',
  arg: 'SECONDS',
  help: 'with --restart: wait this long for a clean shutdown before forcing it off (default 60)',
} as const;

function virshFor(args: ParsedArgs, ctx: Context): Virsh {
  return new Virsh(ctx.run, resolveUri(str(args, 'connect'), ctx.env), ctx.env);
}

function timeoutOf(args: ParsedArgs): number {
  const t = str(args, 'timeout');
  if (t === undefined) return 60;
  if (!/^\d+$/.test(t) || Number(t) > 3600)
    throw new UsageError(
      'usage.bad-timeout',
      `--timeout must be a number of seconds (0-3600), got ${JSON.stringify(t)}`,
      'e.g. --timeout 60',
    );
  return Number(t);
}

function modeOf(args: ParsedArgs): CpuMode | undefined {
  const m = str(args, 'mode');
  if (m === undefined) return undefined;
  if (!(CPU_MODES as readonly string[]).includes(m))
    throw new UsageError(
      'usage.bad-mode',
      `--mode must be one of ${CPU_MODES.join(', ')}, got ${JSON.stringify(m)}`,
      'e.g. --mode host-passthrough',
    );
  return m as CpuMode;
}

function warn(out: Output, text: string): void {
  eprintln(out, `${paint(out, 'yellow', 'warning:')} ${text}`);
}

const powerCycleAdvice = (name: string): string =>
  `it needs a full power cycle to nest (a reboot inside the guest is not enough): run \`nestvirt libvirt nest ${name} --restart\`, or \`virsh shutdown ${name}\` and then \`virsh start ${name}\``;

const lsCommand: Command = {
  name: 'ls',
  summary: 'list libvirt domains and whether each can run VMs of its own',
  usage: 'libvirt ls [--connect URI] [--json]',
  description: [
    'For each domain: its type (kvm, or qemu = TCG emulation), CPU mode, model and the',
    "policy of vmx/svm (POWER: <nested-hv state='on'/>), the host's KVM nested parameter,",
    'whether a running guest still needs a full power cycle, and why it cannot nest.',
    '',
    'example:',
    '  nestvirt libvirt ls --connect qemu:///system',
  ].join('\n'),
  positionals: [0, 0],
  flags: { connect: connectFlag, json: jsonFlag('the domains'), root: rootFlag },
  async run(args, ctx) {
    const virsh = virshFor(args, ctx);
    const report = await listDomains(virsh, {
      root: str(args, 'root') ?? '/',
      stateRoot: stateRoot(ctx.env, ctx.uid),
    });
    if (bool(args, 'json')) {
      printJson(ctx.out, report);
      return 0;
    }
    const h = report.host;
    println(
      ctx.out,
      `${paint(ctx.out, 'bold', report.uri)}: host ${h.arch ?? '?'} ${h.vendor ?? ''} ${h.extension ?? 'no virtualization extension'}` +
        (h.module
          ? `, ${h.module} ${h.nested === null ? (h.local ? 'not loaded' : 'nested=unknown (remote)') : `nested=${h.nested ? '1' : '0'}`}`
          : ''),
    );
    if (report.domains.length === 0) {
      println(ctx.out, 'no domains defined');
      return 0;
    }
    const rows = [['DOMAIN', 'STATE', 'TYPE', 'CPU', 'NEEDS', 'NEST', 'WHY']];
    for (const d of report.domains) {
      const cpu = d.cpu.mode ? `${d.cpu.mode}${d.cpu.model ? ` ${d.cpu.model}` : ''}` : '(default)';
      const needs = d.extension
        ? `${d.extension}${d.cpu.policy ? ` ${d.cpu.policy}` : d.extension === 'nested-hv' && d.cpu.nestedHv ? ` ${d.cpu.nestedHv}` : ''}`
        : '-';
      const nest = d.canNest
        ? paint(ctx.out, 'green', 'yes')
        : d.needsPowerCycle
          ? paint(ctx.out, 'yellow', 'power-cycle')
          : paint(ctx.out, 'red', 'no');
      rows.push([d.name, d.state, d.type, cpu, needs, nest, d.reason]);
    }
    println(ctx.out, table(rows));
    return 0;
  },
};

const nestCommand: Command = {
  name: 'nest',
  summary: 'let a libvirt domain run VMs of its own (surgical XML edit + virsh define)',
  usage:
    'libvirt nest DOMAIN [--mode host-passthrough|host-model|custom|maximum] [--model NAME] [--connect URI] [--dry-run] [--restart] [--json]\n       nestvirt libvirt nest --file DOMAIN.xml [--mode ...] [--model NAME] [--dry-run]',
  description: [
    "Edits the domain's saved (inactive) XML in place: only the <cpu> element (x86: a",
    "<feature policy='require' name='vmx'/> on Intel hosts, svm on AMD hosts and for TCG",
    "domains) or <features> (POWER: <nested-hv state='on'/>) changes; comments, attribute",
    'order and formatting are kept. An existing vmx/svm feature is switched to require (never',
    'duplicated); --mode/--model change the CPU mode or model too. A domain without <cpu>',
    'gets host-passthrough (KVM) or maximum (TCG). Shows the diff, applies it with',
    '`virsh define`, and saves the replaced XML so `nestvirt libvirt unnest` restores it.',
    'A running guest needs a full power cycle; --restart does it (shutdown, destroy after',
    '--timeout, start). --file edits a domain XML file instead (no libvirt needed).',
    '',
    'examples:',
    '  nestvirt libvirt nest web1 --dry-run',
    '  nestvirt libvirt nest web1 --restart',
    '  nestvirt libvirt nest web1 --mode custom --model EPYC',
  ].join('\n'),
  positionals: [0, 1],
  flags: {
    mode: {
      type: 'string',
      arg: 'MODE',
      help: 'set the CPU mode: host-passthrough, host-model, custom or maximum (TCG)',
    },
    model: {
      type: 'string',
      arg: 'NAME',
      help: 'CPU model for custom mode (e.g. EPYC, Skylake-Client)',
    },
    connect: connectFlag,
    'dry-run': { type: 'boolean', help: 'show the diff, change nothing' },
    restart: { type: 'boolean', help: 'power-cycle a running domain so the change takes effect' },
    timeout: timeoutFlag,
    file: {
      type: 'string',
      arg: 'PATH',
      help: 'edit this domain XML file instead of a defined domain',
    },
    json: jsonFlag('the result'),
    root: rootFlag,
  },
  async run(args, ctx) {
    const json = bool(args, 'json');
    const dryRun = bool(args, 'dry-run');
    const mode = modeOf(args);
    const model = str(args, 'model');
    if (model !== undefined && mode !== undefined && mode !== 'custom')
      throw new UsageError(
        'usage.bad-model',
        `--model goes with --mode custom, not --mode ${mode}`,
        'drop --model, or use --mode custom',
      );
    const timeout = timeoutOf(args);
    const file = str(args, 'file');
    const name = args.positionals[0];
    if (file !== undefined) {
      if (name !== undefined)
        throw new UsageError(
          'usage.extra-arg',
          'give either DOMAIN or --file PATH, not both',
          'see `nestvirt libvirt nest --help`',
        );
      if (bool(args, 'restart'))
        throw new UsageError(
          'usage.bad-flag',
          '--restart needs a defined DOMAIN, not --file',
          'define the file with `virsh define` first',
        );
      return nestFile(file, { mode, model, dryRun, json, root: str(args, 'root') ?? '/' }, ctx);
    }
    if (name === undefined)
      throw new UsageError(
        'usage.missing-arg',
        `libvirt nest: missing DOMAIN; usage: nestvirt ${nestCommand.usage.split('\n')[0]}`,
        'see `nestvirt libvirt ls` for the domains',
      );
    const virsh = virshFor(args, ctx);
    const root = stateRoot(ctx.env, ctx.uid);
    const r = await nestDomain(virsh, name, root, {
      ...(mode ? { mode } : {}),
      ...(model ? { model } : {}),
      dryRun,
      root: str(args, 'root') ?? '/',
    });
    const diff = unifiedDiff(r.before, r.after, [`${name} (saved XML)`, `${name} (nested)`]);
    let restarted = false;
    let forced = false;
    const running = r.state !== 'shut off' && r.state !== 'crashed';
    if (!json) {
      if (diff) ctx.out.stdout.write(colorDiff(diff, ctx.out.color));
      for (const n of r.notes) println(ctx.out, `  ${paint(ctx.out, 'gray', '·')} ${n}`);
      if (!r.changed)
        println(ctx.out, `${name} already asks for ${r.extension}: nothing to change`);
      else if (dryRun)
        println(ctx.out, `dry run: ${name} not changed (run without --dry-run to apply)`);
      else
        println(
          ctx.out,
          `${paint(ctx.out, 'green', '✓')} defined ${name} with ${r.extension}; the replaced XML is in ${r.originalPath} (undo: \`nestvirt libvirt unnest ${name}\`)`,
        );
      for (const w of r.warnings) warn(ctx.out, w);
    }
    if (r.needsPowerCycle && running && !dryRun) {
      if (bool(args, 'restart')) {
        const progress = new Progress(ctx.out, { quiet: json });
        ({ forced } = await powerCycle(virsh, name, timeout, (t, fn) => progress.step(t, fn)));
        restarted = true;
        if (!json)
          println(
            ctx.out,
            `${paint(ctx.out, 'green', '✓')} ${name} power-cycled${forced ? ' (forced off after the timeout)' : ''}: it can nest now`,
          );
      } else if (!json) warn(ctx.out, `${name} is ${r.state}: ${powerCycleAdvice(name)}`);
    } else if (r.needsPowerCycle && running && !json)
      warn(ctx.out, `${name} is ${r.state}: ${powerCycleAdvice(name)}`);
    if (json)
      printJson(ctx.out, {
        domain: r.domain,
        uri: r.uri,
        extension: r.extension,
        changed: r.changed,
        applied: r.applied,
        dryRun,
        diff,
        notes: r.notes,
        state: r.state,
        needsPowerCycle: r.needsPowerCycle && !restarted,
        restarted,
        forcedOff: forced,
        warnings: r.warnings,
        originalPath: r.originalPath,
        host: r.host,
      });
    return 0;
  },
};

async function nestFile(
  path: string,
  o: {
    mode: CpuMode | undefined;
    model: string | undefined;
    dryRun: boolean;
    json: boolean;
    root: string;
  },
  ctx: Context,
): Promise<number> {
  let before: string;
  try {
    before = await readFile(path, 'utf8');
  } catch (e) {
    throw new UsageError(
      'libvirt.no-file',
      `cannot read ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`,
      'pass the path of a domain XML file',
    );
  }
  const host = await localHost(o.root);
  const { ext, edit } = planNest(path, before, host, {
    ...(o.mode ? { mode: o.mode } : {}),
    ...(o.model ? { model: o.model } : {}),
  });
  const diff = unifiedDiff(before, edit.text, [`${path}`, `${path} (nested)`]);
  if (edit.changed && !o.dryRun) await writeAtomic(path, edit.text);
  if (o.json)
    printJson(ctx.out, {
      file: path,
      extension: ext,
      changed: edit.changed,
      applied: edit.changed && !o.dryRun,
      dryRun: o.dryRun,
      diff,
      notes: edit.notes,
    });
  else {
    if (diff) ctx.out.stdout.write(colorDiff(diff, ctx.out.color));
    for (const n of edit.notes) println(ctx.out, `  ${paint(ctx.out, 'gray', '·')} ${n}`);
    if (!edit.changed) println(ctx.out, `${path} already asks for ${ext}: nothing to change`);
    else if (o.dryRun) println(ctx.out, `dry run: ${path} not changed`);
    else
      println(
        ctx.out,
        `${paint(ctx.out, 'green', '✓')} wrote ${path}; define it with \`virsh define ${path}\``,
      );
  }
  return 0;
}

const unnestCommand: Command = {
  name: 'unnest',
  summary: 'restore the domain XML that `nestvirt libvirt nest` replaced',
  usage: 'libvirt unnest DOMAIN [--connect URI] [--force] [--dry-run] [--restart] [--json]',
  description: [
    'Defines the saved original XML again, byte for byte. When the domain was changed by',
    'someone else after nestvirt nested it, shows what differs and refuses unless --force.',
    '',
    'example:',
    '  nestvirt libvirt unnest web1',
  ].join('\n'),
  positionals: [1, 1],
  flags: {
    connect: connectFlag,
    force: {
      type: 'boolean',
      help: 'restore even though the domain changed since nestvirt nested it',
    },
    'dry-run': { type: 'boolean', help: 'show the diff, change nothing' },
    restart: { type: 'boolean', help: 'power-cycle a running domain so the change takes effect' },
    timeout: timeoutFlag,
    json: jsonFlag('the result'),
    root: rootFlag,
  },
  async run(args, ctx) {
    const name = args.positionals[0]!;
    const json = bool(args, 'json');
    const dryRun = bool(args, 'dry-run');
    const timeout = timeoutOf(args);
    const virsh = virshFor(args, ctx);
    let r;
    try {
      r = await unnestDomain(virsh, name, stateRoot(ctx.env, ctx.uid), {
        force: bool(args, 'force'),
        dryRun,
        root: str(args, 'root') ?? '/',
        diff: unifiedDiff,
      });
    } catch (e) {
      const changed = (e as { changedSince?: string }).changedSince;
      if (e instanceof NestvirtError && changed && !json)
        ctx.out.stdout.write(colorDiff(changed, ctx.out.color));
      throw e;
    }
    const diff = unifiedDiff(r.before, r.after, [`${name} (saved XML)`, `${name} (original)`]);
    let restarted = false;
    if (!json) {
      if (r.changedSince) {
        warn(
          ctx.out,
          `${name} was changed after nestvirt nested it (--force): these changes are undone too`,
        );
        ctx.out.stdout.write(colorDiff(r.changedSince, ctx.out.color));
      }
      if (diff) ctx.out.stdout.write(colorDiff(diff, ctx.out.color));
      println(
        ctx.out,
        dryRun
          ? `dry run: ${name} not changed`
          : `${paint(ctx.out, 'green', '✓')} restored the original XML of ${name}`,
      );
    }
    if (r.needsPowerCycle && !dryRun) {
      if (bool(args, 'restart')) {
        const progress = new Progress(ctx.out, { quiet: json });
        await powerCycle(virsh, name, timeout, (t, fn) => progress.step(t, fn));
        restarted = true;
      } else if (!json)
        warn(
          ctx.out,
          `${name} is ${r.state} and still nests until a full power cycle (a reboot inside the guest is not enough): run \`virsh shutdown ${name}\`, then \`virsh start ${name}\` (or unnest with --restart)`,
        );
    }
    if (json)
      printJson(ctx.out, {
        domain: r.domain,
        uri: r.uri,
        restored: r.restored,
        dryRun,
        diff,
        changedSince: r.changedSince,
        forced: r.forced,
        state: r.state,
        needsPowerCycle: r.needsPowerCycle && !restarted,
        restarted,
      });
    return 0;
  },
};

export const libvirtCommand: Command = {
  name: 'libvirt',
  summary: 'libvirt guests: which can run VMs of their own, and make them (ls, nest, unnest)',
  usage: 'libvirt ls | nest DOMAIN | unnest DOMAIN',
  description: [
    'Talks to libvirt with virsh (--connect URI; default $LIBVIRT_DEFAULT_URI, else qemu:///system).',
    'Changes are recorded in the ledger (owner libvirt:DOMAIN) and undone by `unnest`.',
  ].join('\n'),
  sub: [lsCommand, nestCommand, unnestCommand],
};
