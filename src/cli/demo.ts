import { spawn } from 'node:child_process';
import type { Command } from './command.js';
import { bool, str } from './command.js';
import { Progress, printJson, eprintln } from './output.js';
import { runDemo, demoExitCode, type SelfRunner } from '../demo/demo.js';
import { renderChain, renderFailure } from '../demo/render.js';
import { UsageError } from '../errors.js';
import { BIN_PATH } from '../version.js';

/** Runs this same nestvirt build as a child process. */
function selfRunner(env: NodeJS.ProcessEnv): SelfRunner {
  return (argv, opts = {}) =>
    new Promise((resolve, reject) => {
      const child = spawn(BIN_PATH, argv, {
        env: { ...env, NO_COLOR: '1' },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stdout = '';
      let stderr = '';
      let partial = '';
      const timer = opts.timeoutMs
        ? setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs)
        : undefined;
      child.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
      child.stderr.on('data', (b: Buffer) => {
        const s = b.toString();
        stderr += s;
        if (opts.onStderrLine) {
          const parts = (partial + s).split(/\r|\n/);
          partial = parts.pop() ?? '';
          for (const p of parts)
            if (p.trim()) opts.onStderrLine(p.replace(/\x1b\[[0-9;]*[A-Za-z]/g, '').trim());
        }
      });
      child.on('error', reject);
      child.on('close', (code, signal) => {
        if (timer) clearTimeout(timer);
        resolve({
          code: code ?? (signal ? 128 : 1),
          stdout,
          stderr:
            signal && !code
              ? stderr +
                `\nnestvirt: ${argv[0]} was killed (${signal}) after ${opts.timeoutMs} ms\n`
              : stderr,
        });
      });
    });
}

export const demoCommand: Command = {
  name: 'demo',
  summary: 'the whole chain: a VM, nestvirt inside it, and a KVM VM inside that',
  usage: 'demo [--json] [--keep] [--no-nested] [--memory SIZE] [--cpus N]',
  description: [
    'Checks this machine, builds the built-in images, starts a VM from the `hypervisor`',
    'image with nesting exposed, runs `nestvirt doctor` and `nestvirt run` inside it to',
    'start an inner VM under KVM, and runs a process there that reports its own level',
    'and accelerator. Exit 0 only if that process ran. On a host without usable KVM the',
    'outer VM runs under QEMU TCG with emulated SVM, so the inner VM still uses KVM.',
    '',
    'example:',
    '  nestvirt demo            # prints the chain: L1 PVM → L2 tcg → L3 kvm here',
    '  nestvirt demo --json     # the chain and timings for scripts',
    '  nestvirt demo --no-nested  # shows the failure when the outer VM lacks svm/vmx',
  ].join('\n'),
  positionals: [0, 0],
  flags: {
    json: { type: 'boolean', help: 'print the chain and timings as JSON (schema: docs/demo.md)' },
    keep: {
      type: 'boolean',
      help: 'keep the VMs running afterwards (remove with `nestvirt rm --force NAME`)',
    },
    'no-nested': {
      type: 'boolean',
      help: 'start the outer VM without virtualization extensions (shows the failure path)',
    },
    memory: {
      type: 'string',
      arg: 'SIZE',
      help: 'memory of the outer VM (default 2G)',
      default: '2G',
    },
    cpus: { type: 'string', arg: 'N', help: 'vCPUs of the outer VM (default 2)', default: '2' },
    timeout: {
      type: 'string',
      arg: 'SECONDS',
      help: 'time limit per VM step (default 600)',
      default: '600',
    },
  },
  async run(args, ctx) {
    const cpus = Number(str(args, 'cpus'));
    if (!Number.isInteger(cpus) || cpus < 1 || cpus > 64)
      throw new UsageError(
        'usage.bad-value',
        `--cpus must be a whole number from 1 to 64, got ${JSON.stringify(str(args, 'cpus'))}`,
      );
    const timeout = Number(str(args, 'timeout'));
    if (!Number.isFinite(timeout) || timeout < 10)
      throw new UsageError(
        'usage.bad-value',
        `--timeout must be a number of seconds (at least 10), got ${JSON.stringify(str(args, 'timeout'))}`,
      );
    const json = bool(args, 'json');
    const progress = new Progress(ctx.out, {});
    const result = await runDemo(
      selfRunner(ctx.env),
      { step: (t, fn) => progress.step(t, fn) },
      {
        nested: !bool(args, 'no-nested'),
        keep: bool(args, 'keep'),
        memory: str(args, 'memory')!,
        cpus,
        stepTimeoutMs: timeout * 1000,
      },
    );
    if (json) printJson(ctx.out, result);
    else {
      if (result.summary) eprintln(ctx.out, `\n${result.summary}\n`);
      if (result.chain.length > 1) ctx.out.stdout.write(renderChain(ctx.out, result));
      if (!result.ok) ctx.out.stderr.write(renderFailure(ctx.out, result));
    }
    return demoExitCode(result);
  },
};
