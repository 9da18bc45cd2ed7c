/**
 * Talking to libvirt through `virsh --connect URI ...` (argv only). virsh's
 * failures become one-line errors with the fix: no daemon, unknown domain,
 * a definition libvirt refuses.
 */
import { NestvirtError, ExitCode, NotPossibleError, UsageError } from '../errors.js';
import type { Runner, RunOptions } from '../util/exec.js';

/** libvirt's default system URI. */
export const DEFAULT_URI = 'qemu:///system';

/** The URI to use: --connect, else $LIBVIRT_DEFAULT_URI, else qemu:///system. */
export function resolveUri(flag: string | undefined, env: NodeJS.ProcessEnv): string {
  return flag || env.LIBVIRT_DEFAULT_URI || DEFAULT_URI;
}

export class Virsh {
  readonly uri: string;
  private readonly runner: Runner;
  private readonly env: NodeJS.ProcessEnv;
  constructor(runner: Runner, uri: string, env: NodeJS.ProcessEnv = process.env) {
    this.runner = runner;
    this.uri = uri;
    this.env = env;
  }

  /** Runs `virsh --connect URI ARGS`; returns stdout; maps failures to typed errors. */
  async call(args: string[], opts: RunOptions & { domain?: string } = {}): Promise<string> {
    const argv = ['virsh', '--quiet', '--connect', this.uri, ...args];
    let res;
    try {
      res = await this.runner(argv, { env: this.env, timeoutMs: 60_000, ...opts, check: false });
    } catch (e) {
      if (e instanceof NestvirtError && e.code === 'host.missing-program')
        throw new NotPossibleError(
          'libvirt.no-virsh',
          'virsh is not installed',
          'install it with `apt-get install libvirt-clients` (and libvirt-daemon-system for the daemon)',
          e,
        );
      throw e;
    }
    if (res.timedOut)
      throw new NestvirtError(
        'libvirt.timeout',
        `\`virsh ${args.join(' ')}\` did not answer within ${(opts.timeoutMs ?? 60_000) / 1000} s`,
        {
          hint: `check that libvirtd at ${this.uri} is healthy (\`virsh --connect ${this.uri} list\`)`,
          exitCode: ExitCode.NOT_POSSIBLE,
        },
      );
    if (res.code === 0) return res.stdout;
    throw this.mapError(args, res.stderr || res.stdout, opts.domain);
  }

  private mapError(args: string[], stderr: string, domain: string | undefined): NestvirtError {
    const msg = virshMessage(stderr);
    if (
      /failed to connect to the hypervisor|Failed to connect socket|Cannot recv data|Connection refused|no connection driver available/i.test(
        stderr,
      )
    )
      return new NotPossibleError(
        'libvirt.no-daemon',
        `libvirtd is not running (cannot connect to ${this.uri}: ${msg})`,
        'start it with `systemctl start libvirtd` (or `libvirtd -d`), or pass --connect URI',
      );
    if (/Domain not found|failed to get domain/i.test(stderr))
      return new UsageError(
        'libvirt.unknown-domain',
        `no libvirt domain ${JSON.stringify(domain ?? args[args.length - 1])} at ${this.uri}`,
        'see `nestvirt libvirt ls` for the domains there (or pass --connect URI)',
      );
    return new NestvirtError('libvirt.virsh-failed', `\`virsh ${args.join(' ')}\` failed: ${msg}`, {
      exitCode: ExitCode.NOT_POSSIBLE,
    });
  }

  /** Every domain's name (active and inactive). */
  async names(): Promise<string[]> {
    const out = await this.call(['list', '--all', '--name']);
    return out
      .split('\n')
      .map((l) => l.trim())
      .filter(Boolean);
  }

  /** A domain's state as virsh prints it: `running`, `shut off`, `paused`, ... */
  async state(name: string): Promise<string> {
    return (await this.call(['domstate', '--', name], { domain: name })).trim();
  }

  /** The domain XML: live (running config) or inactive (what the next start uses). */
  async dumpxml(name: string, inactive: boolean): Promise<string> {
    return this.call(['dumpxml', ...(inactive ? ['--inactive'] : []), '--', name], {
      domain: name,
    });
  }

  async capabilities(): Promise<string> {
    return this.call(['capabilities']);
  }

  /** `virsh define FILE`: libvirt validates the XML and saves it as the inactive config. */
  async define(file: string): Promise<void> {
    await this.call(['define', '--', file]);
  }
}

/** libvirt's own message from virsh's stderr, on one line, without `error: ` prefixes. */
export function virshMessage(stderr: string): string {
  const lines = stderr
    .split('\n')
    .map((l) => l.trim().replace(/^error:\s*/, ''))
    .filter(Boolean);
  return lines[lines.length - 1] ?? 'unknown error';
}
