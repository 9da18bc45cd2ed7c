import type { Command } from './command.js';
import { bool, list, str } from './command.js';
import { printJson } from './output.js';
import { execInVm } from '../vm/lifecycle.js';
import { vmDeps } from '../vm/cli-support.js';
import { checkVmName, parseSeconds } from '../vm/parse.js';
import { UsageError } from '../errors.js';

async function readAll(s: NodeJS.ReadableStream): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of s) parts.push(typeof c === 'string' ? Buffer.from(c) : (c as Buffer));
  return Buffer.concat(parts);
}

export const execCommand: Command = {
  name: 'exec',
  summary: 'run a command in a VM through the QEMU guest agent',
  usage: 'exec VM [--timeout S] [-i] [--env K=V]... [--json] -- CMD [ARG...]',
  description: [
    "Prints the command's stdout and stderr and exits with its exit code (127: not found in",
    'the guest, 124: still running after --timeout). Works with any image running qemu-ga.',
    '',
    'examples:',
    '  nestvirt exec t1 -- uname -a',
    '  nestvirt exec t1 --json -- sh -c "echo hi; exit 3"',
    '  echo data | nestvirt exec t1 -i -- wc -c',
  ].join('\n'),
  passthrough: true,
  positionals: [1, 1],
  flags: {
    timeout: { type: 'string', arg: 'SECONDS', help: 'give up after this long (default 60)' },
    stdin: { type: 'boolean', short: 'i', help: "send this command's stdin to the guest command" },
    env: {
      type: 'string',
      multiple: true,
      arg: 'K=V',
      help: "environment for the command (replaces the agent's)",
    },
    json: {
      type: 'boolean',
      help: 'print {exitCode, signal, stdout, stderr} (and exit with exitCode)',
    },
  },
  async run(args, ctx) {
    const name = checkVmName(args.positionals[0]!);
    if (args.rest.length === 0)
      throw new UsageError(
        'vm.exec-no-command',
        'exec: no command given',
        `put it after --: nestvirt exec ${name} -- uname -a`,
      );
    const timeoutS = parseSeconds('--timeout', str(args, 'timeout') ?? '60');
    const env = list(args, 'env');
    for (const e of env)
      if (!/^[A-Za-z_][A-Za-z0-9_]*=/.test(e))
        throw new UsageError('vm.bad-env', `--env must be NAME=VALUE, got ${JSON.stringify(e)}`);
    const input = bool(args, 'stdin') ? await readAll(process.stdin) : undefined;
    const r = await execInVm(name, args.rest, vmDeps(ctx), {
      timeoutMs: timeoutS * 1000,
      ...(input ? { input } : {}),
      ...(env.length ? { env } : {}),
    });
    if (bool(args, 'json')) {
      printJson(ctx.out, {
        exitCode: r.exitCode,
        signal: r.signal,
        stdout: r.stdout.toString('utf8'),
        stderr: r.stderr.toString('utf8'),
      });
      return r.exitCode;
    }
    await new Promise<void>((res) => ctx.out.stdout.write(r.stdout, () => res()));
    await new Promise<void>((res) => ctx.out.stderr.write(r.stderr, () => res()));
    return r.exitCode;
  },
};
