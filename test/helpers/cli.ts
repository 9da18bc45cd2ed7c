/**
 * Test helpers: run the CLI in-process with captured output, or as a real
 * subprocess through bin/nestvirt.
 */
import { PassThrough } from 'node:stream';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { main } from '../../src/cli/main.js';
import type { Context } from '../../src/cli/command.js';
import { run as realRun, type Runner } from '../../src/util/exec.js';
import { PROJECT_ROOT } from '../../src/version.js';

export { PROJECT_ROOT };
export const BIN = join(PROJECT_ROOT, 'bin', 'nestvirt');

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the CLI in-process. */
export async function runCli(
  argv: string[],
  opts: { env?: NodeJS.ProcessEnv; runner?: Runner; uid?: number } = {},
): Promise<CliResult> {
  const so = new PassThrough();
  const se = new PassThrough();
  let stdout = '';
  let stderr = '';
  so.on('data', (b: Buffer) => (stdout += b.toString()));
  se.on('data', (b: Buffer) => (stderr += b.toString()));
  const ctx: Context = {
    out: { stdout: so, stderr: se, color: false, interactive: false },
    run: opts.runner ?? realRun,
    env: opts.env ?? process.env,
    uid: opts.uid ?? process.getuid?.() ?? 0,
  };
  const code = await main(argv, ctx);
  return { code, stdout, stderr };
}

/** Runs bin/nestvirt as a subprocess. */
export function runBin(
  argv: string[],
  opts: { env?: NodeJS.ProcessEnv; input?: string; timeoutMs?: number } = {},
): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(BIN, argv, {
      env: { ...process.env, NO_COLOR: '1', ...opts.env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    const t = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 120_000);
    child.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(t);
      resolve({ code: code ?? -1, stdout, stderr });
    });
    child.stdin.end(opts.input ?? '');
  });
}

/** A fresh NESTVIRT_HOME for a test. */
export async function tempHome(prefix = 'nestvirt-test-'): Promise<string> {
  return mkdtemp(join(tmpdir(), prefix));
}

/**
 * bin/nestvirt as a user other than root can run it. Tests that drop to
 * `nobody` (root ignores permission bits) need the build to be reachable:
 * a checkout under a private directory (mktemp -d is 0700) is not, so the
 * build is copied once into a world-readable temp dir.
 */
let publicBin: Promise<string> | undefined;
export function binForOtherUsers(): Promise<string> {
  publicBin ??= (async () => {
    const { access, cp, chmod, symlink } = await import('node:fs/promises');
    const { constants } = await import('node:fs');
    const { dirname } = await import('node:path');
    let reachable = true;
    for (let d = PROJECT_ROOT; ; d = dirname(d)) {
      const { stat } = await import('node:fs/promises');
      if (((await stat(d)).mode & 0o001) === 0) reachable = false;
      if (d === dirname(d)) break;
    }
    await access(BIN, constants.R_OK);
    if (reachable) return BIN;
    const dir = await mkdtemp(join(tmpdir(), 'nestvirt-public-'));
    await chmod(dir, 0o755);
    for (const f of ['bin', 'dist', 'package.json'])
      await cp(join(PROJECT_ROOT, f), join(dir, f), { recursive: true });
    await symlink(join(PROJECT_ROOT, 'node_modules'), join(dir, 'node_modules'));
    return join(dir, 'bin', 'nestvirt');
  })();
  return publicBin;
}
