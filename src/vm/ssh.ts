/**
 * `nestvirt ssh`: where a VM's sshd is reachable, with which key and user,
 * and the system ssh client's argv for it. Planning is pure
 * (`resolveSshTarget`, `sshArgv`); probing the port and running ssh are
 * separate effects.
 */
import { createServer, connect } from 'node:net';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { NotPossibleError, NestvirtError, ExitCode } from '../errors.js';
import { Files } from '../state/paths.js';
import type { NicSpec, PortForward } from './types.js';

/** What `nestvirt ssh` needs to know about a VM (from its spec, runtime and image). */
export interface SshVmView {
  name: string;
  dir: string;
  running: boolean;
  image: { name: string; sshd: boolean; cloudInit: boolean; sshUser?: string };
  /** Host port forwarded to the guest's port 22 (user-mode networking). */
  sshPort?: number;
  /** Host address of that forward (127.0.0.1 unless the VM was made with another). */
  sshHost?: string;
  /** The guest's addresses on a bridge network, best first (empty: not known yet). */
  addresses?: string[];
  /** Network name when the VM is on a bridge network (for messages). */
  network?: string;
  /** The ssh user recorded for the VM at `run` (overrides the image's). */
  user?: string;
  /** Private key to use; undefined: ssh's own defaults (agent, ~/.ssh/id_*). */
  identity?: string;
}

export interface SshTarget {
  host: string;
  port: number;
  user: string;
  identity?: string;
  knownHosts: string;
  alias: string;
}

/**
 * The user to log in as: the VM's recorded user, else the image's, else
 * `debian` for cloud-init images (the default user of Debian's cloud
 * images, which receives the seed's keys), else root.
 */
export function sshUserFor(vm: Pick<SshVmView, 'user' | 'image'>): string {
  return vm.user ?? vm.image.sshUser ?? (vm.image.cloudInit ? 'debian' : 'root');
}

/** Decides where to connect, or throws the one-line reason why ssh cannot work yet. */
export function resolveSshTarget(vm: SshVmView, opts: { user?: string } = {}): SshTarget {
  if (!vm.image.sshd && !vm.image.cloudInit)
    throw new NotPossibleError(
      'ssh.no-sshd',
      `VM ${vm.name} runs image ${vm.image.name}, which has no sshd`,
      `use \`nestvirt exec ${vm.name} -- CMD\` or \`nestvirt console ${vm.name}\``,
    );
  if (!vm.running)
    throw new NotPossibleError(
      'ssh.not-running',
      `VM ${vm.name} is not running`,
      `start it: nestvirt start ${vm.name}`,
    );
  const base = {
    user: opts.user ?? sshUserFor(vm),
    knownHosts: join(vm.dir, Files.sshKnownHosts),
    alias: `nestvirt-${vm.name}`,
    ...(vm.identity ? { identity: vm.identity } : {}),
  };
  if (vm.sshPort) return { host: vm.sshHost ?? '127.0.0.1', port: vm.sshPort, ...base };
  const addr = vm.addresses?.[0];
  if (addr) return { host: addr, port: 22, ...base };
  if (vm.network)
    throw new NotPossibleError(
      'ssh.no-address',
      `VM ${vm.name} has no address on network ${vm.network} yet`,
      `wait for it to finish booting (nestvirt logs ${vm.name}), then retry`,
    );
  throw new NotPossibleError(
    'ssh.no-port',
    `VM ${vm.name} has no port forwarded to its sshd (port 22)`,
    `re-create it with nestvirt run (which forwards a port when the image has sshd), or use --port HOSTPORT:22`,
  );
}

/**
 * The system ssh client's argv. Host keys are checked against the VM's own
 * known_hosts (new keys accepted once, changed keys refused), never the
 * user's ~/.ssh/known_hosts, so forwarded ports that get reused by other
 * VMs never trip host-key warnings.
 */
export function sshArgv(
  t: SshTarget,
  command: string[],
  opts: { tty?: boolean; sshOptions?: string[] } = {},
): string[] {
  const argv = [
    'ssh',
    '-o',
    'StrictHostKeyChecking=accept-new',
    '-o',
    `UserKnownHostsFile=${t.knownHosts}`,
    '-o',
    'GlobalKnownHostsFile=/dev/null',
    '-o',
    `HostKeyAlias=${t.alias}`,
    '-o',
    'HashKnownHosts=no',
    '-o',
    'CheckHostIP=no',
    '-o',
    'ConnectTimeout=20',
    '-o',
    'LogLevel=ERROR',
  ];
  if (t.identity) argv.push('-o', 'IdentitiesOnly=yes', '-i', t.identity);
  if (t.port !== 22) argv.push('-p', String(t.port));
  if (opts.tty) argv.push('-t');
  for (const o of opts.sshOptions ?? []) argv.push('-o', o);
  argv.push('-l', t.user, t.host);
  if (command.length) argv.push('--', ...command);
  return argv;
}

/**
 * Whether `nestvirt ssh` tries again after ssh exited with `code`, `sessionMs`
 * after it started, in a VM that started `vmAgeMs` ago. ssh's own failures
 * (exit 255) in the first minutes of a VM's life are mostly boot races: the
 * banner answered, then cloud-init restarted sshd (its set-passwords module
 * does) and the next connection was reset, or the key was not installed yet.
 * Only quick failures count: a session that lasted is not retried.
 */
export function sshRetryable(code: number, sessionMs: number, vmAgeMs: number | null): boolean {
  return code === 255 && sessionMs < 10_000 && vmAgeMs !== null && vmAgeMs < 10 * 60_000;
}

/**
 * Waits until an sshd greets on host:port (`SSH-2.0-...`). A port QEMU
 * forwards accepts connections even before the guest listens, so only the
 * banner proves sshd is there. Resolves false at the deadline.
 */
export async function waitForSshBanner(
  host: string,
  port: number,
  timeoutMs: number,
): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const left = deadline - Date.now();
    if (await bannerOnce(host, port, Math.max(200, Math.min(10_000, left)))) return true;
    if (Date.now() >= deadline) return false;
    await new Promise((r) => setTimeout(r, Math.min(1000, Math.max(0, deadline - Date.now()))));
  }
}

function bannerOnce(host: string, port: number, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    let got = '';
    const sock = connect({ host, port });
    const done = (ok: boolean): void => {
      clearTimeout(timer);
      sock.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    sock.on('data', (b: Buffer) => {
      got += b.toString('latin1');
      if (got.includes('\n')) done(got.startsWith('SSH-'));
    });
    sock.on('error', () => done(false));
    sock.on('close', () => done(got.startsWith('SSH-')));
  });
}

/** A TCP port on 127.0.0.1 free right now (the kernel picks it). */
export function pickFreePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => (port ? resolve(port) : reject(new Error('no free port'))));
    });
  });
}

/**
 * Runs a program with this process's stdio (like exec): the terminal's
 * Ctrl-C reaches the child, not nestvirt. Resolves with the child's exit
 * code (128+signal when it died of a signal).
 */
export function runInteractive(
  argv: string[],
  env: NodeJS.ProcessEnv = process.env,
): Promise<number> {
  return new Promise((resolve, reject) => {
    const [cmd, ...args] = argv;
    const ignore = (): void => {};
    for (const s of ['SIGINT', 'SIGQUIT', 'SIGTSTP'] as const) process.on(s, ignore);
    const cleanup = (): void => {
      for (const s of ['SIGINT', 'SIGQUIT', 'SIGTSTP'] as const) process.off(s, ignore);
    };
    const child = spawn(cmd!, args, { stdio: 'inherit', env });
    child.on('error', (e: NodeJS.ErrnoException) => {
      cleanup();
      if (e.code === 'ENOENT')
        reject(
          new NestvirtError('host.missing-program', `program not found: ${cmd}`, {
            hint: 'install the ssh client: apt-get install openssh-client (or run scripts/setup.sh)',
            exitCode: ExitCode.NOT_POSSIBLE,
          }),
        );
      else reject(e);
    });
    child.on('close', (code, signal) => {
      cleanup();
      resolve(code ?? 128 + (signal ? signalNumber(signal) : 0));
    });
  });
}

function signalNumber(s: NodeJS.Signals): number {
  const n: Partial<Record<NodeJS.Signals, number>> = {
    SIGHUP: 1,
    SIGINT: 2,
    SIGQUIT: 3,
    SIGKILL: 9,
    SIGPIPE: 13,
    SIGTERM: 15,
  };
  return n[s] ?? 1;
}

/** One entry of the guest agent's `guest-network-get-interfaces` answer. */
export interface GuestInterface {
  name: string;
  'hardware-address'?: string;
  'ip-addresses'?: { 'ip-address-type': 'ipv4' | 'ipv6'; 'ip-address': string; prefix: number }[];
}

/**
 * The guest's addresses on the NIC with `mac`, from the guest agent: IPv4
 * first, then global IPv6; loopback and link-local left out.
 */
export function guestAddresses(ifaces: GuestInterface[], mac: string): string[] {
  const nic = ifaces.find((i) => i['hardware-address']?.toLowerCase() === mac.toLowerCase());
  const ips = nic?.['ip-addresses'] ?? [];
  const v4 = ips.filter(
    (a) => a['ip-address-type'] === 'ipv4' && !/^(127\.|169\.254\.)/.test(a['ip-address']),
  );
  const v6 = ips.filter(
    (a) => a['ip-address-type'] === 'ipv6' && !/^(fe80:|::1$)/i.test(a['ip-address']),
  );
  return [...v4, ...v6].map((a) => a['ip-address']);
}

/**
 * Adds a forward from a free 127.0.0.1 port to the guest's port 22 on the
 * first user-mode NIC, when the image runs sshd (or cloud-init, which
 * Debian-style cloud images pair with sshd) and no forward to 22 exists.
 * Returns the NIC list to create the VM with (the input is not changed).
 */
export async function withSshForward(
  nics: NicSpec[],
  features: { sshd: boolean; cloudInit: boolean },
  freePort: () => Promise<number> = pickFreePort,
): Promise<NicSpec[]> {
  if (!features.sshd && !features.cloudInit) return nics;
  const i = nics.findIndex((n) => n.kind === 'user');
  const user = nics[i];
  if (!user || user.kind !== 'user') return nics;
  if (user.forwards.some((f) => f.proto === 'tcp' && f.guestPort === 22)) return nics;
  const fwd: PortForward = {
    proto: 'tcp',
    hostAddr: '127.0.0.1',
    hostPort: await freePort(),
    guestPort: 22,
  };
  return nics.map((n, j) => (j === i ? { ...user, forwards: [...user.forwards, fwd] } : n));
}

/** Where the host reaches the guest's sshd through a user-mode forward, from the VM's NICs. */
export function sshForward(nics: NicSpec[]): { host: string; port: number } | undefined {
  for (const n of nics)
    if (n.kind === 'user') {
      const f = n.forwards.find((x) => x.proto === 'tcp' && x.guestPort === 22);
      if (f)
        return {
          host: ['0.0.0.0', '::', ''].includes(f.hostAddr) ? '127.0.0.1' : f.hostAddr,
          port: f.hostPort,
        };
    }
  return undefined;
}
