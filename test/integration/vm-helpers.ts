/**
 * Shared set-up for the VM integration tests: a fresh NESTVIRT_HOME with the
 * shared `tiny` image seeded into it, the CLI as a subprocess, a pty for
 * console tests (util-linux `script`), and clean-up that kills every VM the
 * test started.
 */
import { spawn } from 'node:child_process';
import { rm } from 'node:fs/promises';
import { tempHome, runBin, BIN, type CliResult } from '../helpers/cli.js';
import { seedImage, TEST_CACHE } from '../helpers/images.js';
import { shellQuote } from '../../src/util/exec.js';

export interface VmTestHome {
  home: string;
  env: NodeJS.ProcessEnv;
  nv(argv: string[], opts?: { timeoutMs?: number; input?: string }): Promise<CliResult>;
  /** Removes every VM (killing running ones). */
  cleanup(): Promise<void>;
}

export async function vmTestHome(): Promise<VmTestHome> {
  const home = await tempHome('nv-vm-');
  await seedImage(home, 'tiny');
  const env = { NESTVIRT_HOME: home, NESTVIRT_CACHE: TEST_CACHE };
  const nv = (argv: string[], opts: { timeoutMs?: number; input?: string } = {}) =>
    runBin(argv, {
      env,
      timeoutMs: opts.timeoutMs ?? 300_000,
      ...(opts.input !== undefined ? { input: opts.input } : {}),
    });
  return {
    home,
    env,
    nv,
    async cleanup() {
      const ls = await nv(['ls', '--json']);
      const names = (JSON.parse(ls.stdout) as { vms: { name: string }[] }).vms.map((v) => v.name);
      if (names.length) await nv(['rm', '--force', ...names]);
      await rm(home, { recursive: true, force: true });
    },
  };
}

/** Parses a --json stdout. */
export function json<T = Record<string, unknown>>(r: CliResult): T {
  try {
    return JSON.parse(r.stdout) as T;
  } catch {
    throw new Error(`not JSON (exit ${r.code}): ${r.stdout}\nstderr: ${r.stderr}`);
  }
}

export interface Pty {
  write(s: string | Buffer): void;
  /** Resolves when the output matches. */
  expect(re: RegExp, timeoutMs?: number): Promise<string>;
  output(): string;
  exited: Promise<number>;
}

/** Runs `nestvirt ARGV...` on a pseudo-terminal (through util-linux `script`). */
export function onPty(argv: string[], env: NodeJS.ProcessEnv, after = ''): Pty {
  const cmd = shellQuote([BIN, ...argv]) + after;
  const child = spawn('script', ['-qfec', cmd, '/dev/null'], {
    env: { ...process.env, NO_COLOR: '1', TERM: 'xterm', ...env },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let out = '';
  const waiters: (() => void)[] = [];
  const onData = (b: Buffer): void => {
    out += b.toString('utf8');
    for (const w of waiters.splice(0)) w();
  };
  child.stdout.on('data', onData);
  child.stderr.on('data', onData);
  const exited = new Promise<number>((r) => child.on('close', (c) => r(c ?? -1)));
  return {
    write: (s) => child.stdin.write(s),
    output: () => out,
    exited,
    expect(re, timeoutMs = 30_000) {
      return new Promise((resolve, reject) => {
        const t = setTimeout(
          () => reject(new Error(`pty: no ${re} within ${timeoutMs} ms; got:\n${out}`)),
          timeoutMs,
        );
        const check = (): void => {
          const m = re.exec(out);
          if (m) {
            clearTimeout(t);
            resolve(m[0]);
          } else waiters.push(check);
        };
        check();
      });
    },
  };
}
