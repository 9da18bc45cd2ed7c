/**
 * nestvirt's entry point: routes argv to a command, turns every error into
 * one line and the documented exit code.
 */
import type { Command, Context } from './command.js';
import { helpText, parseFlags } from './command.js';
import { commandRefs } from './commands.js';
import { makeOutput, eprintln, paint, printJson } from './output.js';
import { asNestvirtError, ExitCode, UsageError } from '../errors.js';
import { run } from '../util/exec.js';
import { VERSION } from '../version.js';
import { trace } from '../util/trace.js';

const root: Command = {
  name: 'nestvirt',
  summary: 'nested virtualization, end to end: can VMs run here, can they run VMs, and make it so',
  usage: 'COMMAND [options]',
  description: [
    'Levels: L0 is the physical host, L1 a VM on it, L2 a VM inside L1.',
    'Every command that reports takes --json; exit codes: 0 ok, 1 not possible here,',
    '2 usage or input error, 3 internal failure, 4 busy (another command holds the lock).',
  ].join('\n'),
  sub: [],
};

/** Loads every command (for the root --help only). */
async function loadAll(): Promise<Command[]> {
  return Promise.all(commandRefs.map((r) => r.load()));
}

/** Runs the CLI; returns the exit code (does not call process.exit). */
export async function main(argv: string[], ctx: Context): Promise<number> {
  let cmd = root;
  let path = '';
  let rest = argv;
  const wantsJson = argv.includes('--json');
  try {
    while (cmd.sub && rest.length > 0 && !rest[0]!.startsWith('-')) {
      const ref = cmd === root ? commandRefs.find((c) => c.name === rest[0]) : undefined;
      const next = ref ? await ref.load() : cmd.sub.find((c) => c.name === rest[0]);
      if (!next) {
        if (cmd.run) break;
        throw new UsageError(
          'usage.unknown-command',
          `unknown command ${JSON.stringify(rest[0])}${path ? ` for \`nestvirt ${path}\`` : ''}`,
          `see \`nestvirt ${path ? path + ' ' : ''}--help\``,
        );
      }
      cmd = next;
      path = path ? `${path} ${next.name}` : next.name;
      rest = rest.slice(1);
    }
    if (cmd === root && (rest[0] === '--version' || rest[0] === '-V')) {
      ctx.out.stdout.write(`nestvirt ${VERSION}\n`);
      return 0;
    }
    if (!cmd.run) {
      if (rest.length === 0 || rest[0] === '--help' || rest[0] === '-h') {
        if (cmd === root) root.sub = await loadAll();
        ctx.out.stdout.write(helpText(cmd, path));
        return rest.length === 0 ? ExitCode.USAGE : 0;
      }
      throw new UsageError(
        'usage.bad-flag',
        `${path || 'nestvirt'}: unknown flag ${rest[0]}`,
        `see \`nestvirt ${path ? path + ' ' : ''}--help\``,
      );
    }
    trace(`command ${path} loaded`);
    const args = parseFlags(cmd, rest, path);
    if (args.flags['help']) {
      ctx.out.stdout.write(helpText(cmd, path));
      return 0;
    }
    return await cmd.run(args, ctx);
  } catch (e) {
    const err = asNestvirtError(e);
    if (ctx.env.NESTVIRT_DEBUG) eprintln(ctx.out, String((e as Error)?.stack ?? e));
    if (wantsJson && err.exitCode !== ExitCode.USAGE) printJson(ctx.out, { error: err.toJSON() });
    eprintln(ctx.out, `${paint(ctx.out, 'red', 'nestvirt:')} ${err.message}`);
    if (err.hint) eprintln(ctx.out, `  ${paint(ctx.out, 'yellow', 'fix:')} ${err.hint}`);
    return err.exitCode;
  }
}

/**
 * bin/nestvirt moves NODE_EXTRA_CA_CERTS aside, to NESTVIRT_DEFERRED_CA_CERTS,
 * for commands that make no HTTPS request (node would load it at start-up);
 * this puts it back, so programs started from here see it unchanged.
 */
export function restoreDeferredEnv(env: NodeJS.ProcessEnv): void {
  const deferred = env.NESTVIRT_DEFERRED_CA_CERTS;
  if (deferred === undefined) return;
  env.NODE_EXTRA_CA_CERTS = deferred;
  delete env.NESTVIRT_DEFERRED_CA_CERTS;
}

/** The process entry: real output, runner and environment. */
export async function cli(): Promise<void> {
  restoreDeferredEnv(process.env);
  const ctx: Context = { out: makeOutput(), run, env: process.env, uid: process.getuid?.() ?? 0 };
  const code = await main(process.argv.slice(2), ctx);
  process.exitCode = code;
}
