/**
 * The one door for running programs: argv arrays, never shell strings.
 * A `Runner` is passed in so tests can substitute it, or put fixture
 * executables first on PATH.
 */
import type { SpawnOptions } from 'node:child_process';
import { accessSync, constants as fsConstants } from 'node:fs';
import { NestvirtError, ExitCode } from '../errors.js';
import { childProcess } from './lazy.js';

export interface RunOptions {
  /** Text written to the child's stdin. */
  input?: string | Buffer;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Kill the child (SIGKILL) after this many ms; result has timedOut=true. */
  timeoutMs?: number;
  /** Throw a NestvirtError when the exit code is non-zero (default true). */
  check?: boolean;
}

export interface RunResult {
  argv: string[];
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

export type Runner = (argv: string[], opts?: RunOptions) => Promise<RunResult>;

/** Quotes an argv for logs and error messages only (never executed). */
export function shellQuote(argv: readonly string[]): string {
  return argv
    .map((a) => (/^[A-Za-z0-9_@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`))
    .join(' ');
}

/** The default Runner: spawns the program directly, collects output. */
export const run: Runner = (argv, opts = {}) =>
  new Promise((resolve, reject) => {
    const [cmd, ...args] = argv;
    if (!cmd) return reject(new Error('run: empty argv'));
    const sopts: SpawnOptions = {
      env: opts.env ?? process.env,
      cwd: opts.cwd,
      stdio: ['pipe', 'pipe', 'pipe'],
    };
    const child = childProcess().spawn(cmd, args, sopts);
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let timedOut = false;
    let timer: NodeJS.Timeout | undefined;
    if (opts.timeoutMs !== undefined)
      timer = setTimeout(() => {
        timedOut = true;
        child.kill('SIGKILL');
      }, opts.timeoutMs);
    child.stdout!.on('data', (b: Buffer) => out.push(b));
    child.stderr!.on('data', (b: Buffer) => err.push(b));
    child.stdin!.on('error', () => {});
    child.on('error', (e: NodeJS.ErrnoException) => {
      if (timer) clearTimeout(timer);
      if (e.code === 'ENOENT')
        reject(
          new NestvirtError('host.missing-program', `program not found: ${cmd}`, {
            hint: 'run scripts/setup.sh (or install the Debian package that provides it)',
            exitCode: ExitCode.NOT_POSSIBLE,
            cause: e,
          }),
        );
      else reject(e);
    });
    child.on('close', (code, signal) => {
      if (timer) clearTimeout(timer);
      const res: RunResult = {
        argv: [...argv],
        code,
        signal,
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
        timedOut,
      };
      if ((opts.check ?? true) && code !== 0) {
        const why = timedOut
          ? `timed out after ${opts.timeoutMs} ms`
          : `exited ${code ?? signal}: ${lastLine(res.stderr) || lastLine(res.stdout)}`;
        reject(
          new NestvirtError('host.command-failed', `${shellQuote(argv)} ${why}`, {
            exitCode: ExitCode.INTERNAL,
          }),
        );
      } else resolve(res);
    });
    if (opts.input !== undefined) child.stdin!.end(opts.input);
    else child.stdin!.end();
  });

function lastLine(s: string): string {
  const lines = s.trim().split('\n');
  return (lines[lines.length - 1] ?? '').trim();
}

/** Finds an executable on PATH; undefined when absent. */
export async function which(
  name: string,
  env: NodeJS.ProcessEnv = process.env,
): Promise<string | undefined> {
  for (const dir of (env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin').split(':')) {
    if (!dir) continue;
    const p = `${dir.replace(/\/+$/, '')}/${name}`;
    try {
      accessSync(p, fsConstants.X_OK);
      return p;
    } catch {
      /* next */
    }
  }
  return undefined;
}
