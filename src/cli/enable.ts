/**
 * `nestvirt enable [--dry-run] [--persist] [--script] [--json]`: KVM nesting
 * on for this machine's module. Also the shared runner of `disable`.
 */
import { stat } from 'node:fs/promises';
import type { Command, Context, ParsedArgs } from './command.js';
import { bool, str } from './command.js';
import { eprintln, paint, printJson, println, Progress } from './output.js';
import { ExitCode, UsageError } from '../errors.js';
import { planScript, planText, type Plan } from '../host/plan.js';
import { stateRoot } from '../state/paths.js';
import { removeEntry } from '../state/ledger.js';
import {
  apply,
  LEDGER_OWNER,
  NESTVIRT_CONF,
  MODULES,
  prepare,
  type NestingAction,
  type NestingOptions,
} from '../host/nesting/index.js';
import type { NestingModule } from '../host/nesting/facts.js';

/** Test seam: read and write the host through this root (docs/internals.md). */
export const HOST_ROOT_ENV = 'NESTVIRT_HOST_ROOT';

export function nestingFlags(action: NestingAction): NonNullable<Command['flags']> {
  return {
    'dry-run': {
      type: 'boolean',
      help: 'print the plan (each step with its shell lines) and change nothing',
    },
    persist: {
      type: 'boolean',
      help:
        action === 'enable'
          ? 'also write /etc/modprobe.d/nestvirt-nested.conf so nesting stays on after reboot'
          : "also keep it off after reboot (without a record: write nestvirt's modprobe.d file with nested=0)",
    },
    script: {
      type: 'boolean',
      help: 'print the plan as a POSIX shell script (for hosts without node); change nothing',
    },
    json: { type: 'boolean', help: 'print the result as JSON (see docs/enable.md)' },
    root: {
      type: 'string',
      arg: 'DIR',
      help: 'plan for a captured tree laid out like / (with --dry-run or --script only)',
    },
    module: {
      type: 'string',
      arg: 'MODULE',
      help: 'plan for this module instead of the detected one: kvm_intel, kvm_amd, kvm_hv, kvm',
    },
  };
}

/** Runs enable or disable; returns the exit code. */
export async function runNesting(
  action: NestingAction,
  args: ParsedArgs,
  ctx: Context,
): Promise<number> {
  const dryRun = bool(args, 'dry-run');
  const script = bool(args, 'script');
  const json = bool(args, 'json');
  const persist = bool(args, 'persist');
  if (script && json)
    throw new UsageError(
      'usage.conflict',
      `${action}: --script and --json cannot be combined`,
      'use one of them',
    );
  const rootFlag = str(args, 'root');
  if (rootFlag !== undefined && !dryRun && !script)
    throw new UsageError(
      'usage.root-needs-dry-run',
      `${action}: --root DIR only plans for a captured tree; it needs --dry-run or --script`,
      `run \`nestvirt ${action} --dry-run --root ${rootFlag}\``,
    );
  const moduleFlag = str(args, 'module');
  if (moduleFlag !== undefined && !MODULES.includes(moduleFlag as NestingModule))
    throw new UsageError(
      'usage.bad-module',
      `${action}: --module must be one of ${MODULES.join(', ')}, got ${JSON.stringify(moduleFlag)}`,
    );
  const root = rootFlag ?? ctx.env[HOST_ROOT_ENV] ?? '/';
  if (rootFlag !== undefined) {
    const st = await stat(rootFlag).catch(() => undefined);
    if (!st?.isDirectory())
      throw new UsageError(
        'usage.bad-root',
        `${action}: --root ${JSON.stringify(rootFlag)} is not a directory`,
        'give a tree captured with `nestvirt doctor --capture` (unpacked)',
      );
  }
  const opts: NestingOptions = {
    root,
    stateRoot: stateRoot(ctx.env, ctx.uid),
    persist,
    run: ctx.run,
    env: ctx.env,
    capturedTree: rootFlag !== undefined,
    ...(moduleFlag ? { module: moduleFlag as NestingModule } : {}),
  };
  const p = await prepare(action, opts);
  const { plan, problem } = p.planned;

  if (dryRun || script) {
    if (json) printJson(ctx.out, p.report);
    else if (script) {
      if (problem) return fail(ctx, problem.message, problem.fix);
      ctx.out.stdout.write(planScript(plan));
    } else ctx.out.stdout.write(planText(plan));
    return problem ? ExitCode.NOT_POSSIBLE : ExitCode.OK;
  }
  if (problem) {
    if (json) printJson(ctx.out, p.report);
    return fail(ctx, problem.message, problem.fix);
  }
  if (plan.steps.length === 0) {
    // A record whose changes are all undone already (by hand): clear it.
    if (action === 'disable' && p.record)
      await removeEntry(opts.stateRoot, LEDGER_OWNER).catch(() => undefined);
    if (json) printJson(ctx.out, p.report);
    else {
      const state =
        p.report.module && p.facts.nestedRaw !== null
          ? `${p.report.module} nested=${p.facts.nestedRaw}`
          : '';
      const what =
        action === 'enable'
          ? 'nesting is already on'
          : p.record
            ? 'what `nestvirt enable` changed is already undone'
            : 'nesting is already off';
      println(ctx.out, `${what}${state ? ` (${state})` : ''}; nothing to do`);
      for (const n of plan.notes) println(ctx.out, `  ${paint(ctx.out, 'yellow', 'note:')} ${n}`);
    }
    return ExitCode.OK;
  }
  if (ctx.uid !== 0) {
    const again = [
      'nestvirt',
      action,
      ...(persist ? ['--persist'] : []),
      ...(moduleFlag ? ['--module', moduleFlag] : []),
      ...(json ? ['--json'] : []),
    ];
    throw new UsageError('usage.not-root', `${action} needs root: run \`sudo ${again.join(' ')}\``);
  }
  const progress = new Progress(ctx.out, { quiet: json });
  const wrap = (pl: Plan): Plan => ({
    ...pl,
    steps: pl.steps.map((s) => ({ ...s, apply: () => progress.step(s.title, () => s.apply()) })),
  });
  const report = await apply(p, opts, wrap);
  if (json) printJson(ctx.out, report);
  else {
    const m = report.module ?? '';
    const value = report.after === null ? 'unknown' : report.after ? 'on' : 'off';
    const wroteFile = report.steps.some((s) => s.title.includes(NESTVIRT_CONF));
    const head =
      action === 'enable'
        ? `${paint(ctx.out, 'green', 'nesting is on')}: ${m} nested=${value}${persist ? ` (now and at every boot: ${NESTVIRT_CONF})` : ' (until reboot)'}`
        : report.record
          ? `${paint(ctx.out, 'green', 'undid `nestvirt enable`')}: ${m} nested=${value}${wroteFile ? `; ${NESTVIRT_CONF} is as it was before` : ''}`
          : `${paint(ctx.out, 'green', 'nesting is off')}: ${m} nested=${value}${persist ? ` (now and at every boot: ${NESTVIRT_CONF})` : ' (until reboot)'}`;
    println(ctx.out, head);
    for (const n of plan.notes) println(ctx.out, `  ${paint(ctx.out, 'yellow', 'note:')} ${n}`);
    if (action === 'enable') println(ctx.out, `  undo with \`nestvirt disable\``);
  }
  return ExitCode.OK;
}

function fail(ctx: Context, message: string, fix: string): number {
  eprintln(ctx.out, `${paint(ctx.out, 'red', 'nestvirt:')} ${message}`);
  eprintln(ctx.out, `  ${paint(ctx.out, 'yellow', 'fix:')} ${fix}`);
  return ExitCode.NOT_POSSIBLE;
}

export const enableCommand: Command = {
  name: 'enable',
  summary: 'turn KVM nesting on for this machine (kvm_intel, kvm_amd, kvm_hv, s390x kvm)',
  usage: 'enable [--dry-run] [--persist] [--script] [--json] [--root DIR] [--module MODULE]',
  description: [
    'Reloads the vendor KVM module with nested=1 (refusing while VMs use it, naming them),',
    'checks that the parameter reads Y/1 afterwards and records what changed, so that',
    "`nestvirt disable` undoes exactly that. --persist also writes nestvirt's own",
    '/etc/modprobe.d/nestvirt-nested.conf; other modprobe.d files are never touched.',
    '',
    'examples:',
    '  nestvirt enable --dry-run --persist     show the plan with its shell lines',
    '  sudo nestvirt enable --persist          on now and after reboot',
    '  nestvirt enable --script > enable.sh    the same as a POSIX shell script',
    '',
    'exit codes: 0 done or already on, 1 not possible here (no KVM module or extension,',
    'module built in, in use by VMs, verification failed and undone), 2 usage (including',
    'not root), 4 another enable/disable is running.',
  ].join('\n'),
  flags: nestingFlags('enable'),
  positionals: [0, 0],
  run: (args, ctx) => runNesting('enable', args, ctx),
};
