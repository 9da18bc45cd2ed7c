/**
 * `nestvirt ssh VM [-- CMD...]`: the system ssh client into a VM, with the
 * VM's key, its own known_hosts and the image's user (docs/cloud-init.md).
 */
import type { Command } from './command.js';
import { bool, list, str } from './command.js';
import { eprintln, printJson, println } from './output.js';
import { UsageError } from '../errors.js';
import { shellQuote } from '../util/exec.js';
import { stateRoot } from '../state/paths.js';
import { checkVmName, parseSeconds } from '../vm/parse.js';
import { reconcile, vmPaths } from '../vm/state.js';
import { readCloudInitRecord } from '../vm/cloudinit.js';
import { QgaClient } from '../vm/qga.js';
import {
  guestAddresses,
  resolveSshTarget,
  runInteractive,
  sshArgv,
  sshForward,
  sshRetryable,
  waitForSshBanner,
  type GuestInterface,
  type SshVmView,
} from '../vm/ssh.js';
import { NotPossibleError } from '../errors.js';

export const sshCommand: Command = {
  name: 'ssh',
  summary: 'log in to a VM with ssh (images with sshd, e.g. cloud images)',
  usage: 'ssh VM [--user USER] [-t] [-o OPT]... [--timeout S] [--print [--json]] [-- CMD [ARG...]]',
  description: [
    "Runs the system ssh client with the VM's key (made by `nestvirt run`, or the private key",
    "beside your --ssh-key), a known_hosts file of the VM's own (new host keys accepted once,",
    "changed ones refused) and the image's user (debian on Debian cloud images, else root).",
    "Exits with ssh's exit code: the remote command's, 255 when ssh itself failed. As with ssh,",
    "the words after -- are joined with spaces and run by the remote user's shell.",
    'In the first minutes after a VM starts, an ssh that fails at once (255) is retried until',
    '--timeout: cloud-init may restart sshd, or install the key, after sshd first answered.',
    "With user-mode networking it connects to the port `run` forwarded to the guest's port 22;",
    "on a nestvirt network, to the guest's address (asked from the guest agent).",
    '',
    'examples:',
    '  nestvirt ssh web',
    '  nestvirt ssh web -- hostname',
    '  nestvirt ssh web -t -- sudo journalctl -f',
    '  eval "$(nestvirt ssh web --print) uptime"   # --print: the ssh command line, for scripts',
  ].join('\n'),
  passthrough: true,
  positionals: [1, 1],
  flags: {
    user: {
      type: 'string',
      short: 'l',
      arg: 'USER',
      help: "log in as USER (default: the image's user)",
    },
    tty: { type: 'boolean', short: 't', help: 'force a terminal, for interactive commands' },
    'ssh-option': {
      type: 'string',
      short: 'o',
      multiple: true,
      arg: 'OPT',
      help: 'pass -o OPT to ssh (repeatable)',
    },
    timeout: {
      type: 'string',
      arg: 'SECONDS',
      help: 'wait this long for sshd to answer (default 60; 0: try once)',
    },
    print: { type: 'boolean', help: 'print the ssh command line instead of running it' },
    json: {
      type: 'boolean',
      help: 'with --print: {vm, host, port, user, identity, knownHosts, argv}',
    },
  },
  async run(args, ctx) {
    const name = checkVmName(args.positionals[0]!);
    if (bool(args, 'json') && !bool(args, 'print'))
      throw new UsageError(
        'ssh.json-needs-print',
        '--json goes with --print (an ssh session has no JSON)',
        `nestvirt ssh ${name} --print --json`,
      );
    const timeoutS = parseSeconds('--timeout', str(args, 'timeout') ?? '60');
    const root = stateRoot(ctx.env, ctx.uid);
    const p = vmPaths(root, name);
    const r = await reconcile(p, { write: 'try' });
    const ci = await readCloudInitRecord(p.dir);
    const fwd = sshForward(r.spec.nics);
    const view: SshVmView = {
      name,
      dir: p.dir,
      running: r.pid !== null,
      image: {
        name: r.spec.image ?? '(kernel)',
        sshd: r.spec.imageFeatures.sshd,
        cloudInit: r.spec.imageFeatures.cloudInit,
      },
      ...(fwd ? { sshHost: fwd.host, sshPort: fwd.port } : {}),
      ...(ci ? { user: ci.sshUser } : {}),
      ...(ci?.identity ? { identity: ci.identity } : {}),
    };
    const tap = r.spec.nics.find((n) => n.kind === 'tap');
    if (!fwd && tap && tap.kind === 'tap' && view.running) {
      view.network = tap.ifname;
      view.addresses = await addressesFromAgent(p.qga, tap.mac);
    }
    const user = str(args, 'user');
    const target = resolveSshTarget(view, user ? { user } : {});
    const argv = sshArgv(target, args.rest, {
      tty: bool(args, 'tty'),
      sshOptions: list(args, 'ssh-option'),
    });
    if (bool(args, 'print')) {
      if (bool(args, 'json'))
        printJson(ctx.out, {
          vm: name,
          host: target.host,
          port: target.port,
          user: target.user,
          identity: target.identity ?? null,
          knownHosts: target.knownHosts,
          argv,
        });
      else println(ctx.out, shellQuote(argv));
      return 0;
    }
    const deadline = Date.now() + timeoutS * 1000;
    if (!(await waitForSshBanner(target.host, target.port, timeoutS * 1000)))
      throw new NotPossibleError(
        'ssh.no-answer',
        `no sshd answered in VM ${name} at ${target.host}:${target.port}${timeoutS ? ` within ${timeoutS} s` : ''}`,
        `it may still be booting: see \`nestvirt logs ${name}\`, then retry (or wait longer: --timeout 300)`,
      );
    if (ctx.env.NESTVIRT_DEBUG) eprintln(ctx.out, shellQuote(argv));
    const startedAt = r.runtime.startedAt ? Date.parse(r.runtime.startedAt) : NaN;
    for (let told = false; ;) {
      const t0 = Date.now();
      const code = await runInteractive(argv, ctx.env);
      const age = Number.isNaN(startedAt) ? null : Date.now() - startedAt;
      if (!sshRetryable(code, Date.now() - t0, age) || Date.now() + 2000 > deadline) return code;
      if (!told)
        eprintln(
          ctx.out,
          `nestvirt: ssh failed in VM ${name}, which started ${Math.round((age ?? 0) / 1000)} s ago; sshd may still be setting up (cloud-init restarts it): retrying until --timeout`,
        );
      told = true;
      await new Promise((res) => setTimeout(res, 2000));
      if (!(await waitForSshBanner(target.host, target.port, Math.max(0, deadline - Date.now()))))
        return code;
    }
  },
};

/** The guest's addresses on the NIC with `mac`, asked from its guest agent ([] when it does not answer). */
async function addressesFromAgent(qgaSocket: string, mac: string): Promise<string[]> {
  let c: QgaClient | undefined;
  try {
    c = await QgaClient.connect(qgaSocket, { timeoutMs: 3000 });
    return guestAddresses(
      await c.execute<GuestInterface[]>('guest-network-get-interfaces', undefined, {
        timeoutMs: 5000,
      }),
      mac,
    );
  } catch {
    return [];
  } finally {
    c?.close();
  }
}
