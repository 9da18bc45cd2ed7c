import type { Command } from './command.js';
import { bool, list, str } from './command.js';
import { printJson, println, Progress } from './output.js';
import { createVm, startVm, waitReady, rmVm } from '../vm/lifecycle.js';
import { images, vmDeps } from '../vm/cli-support.js';
import { generateName, parseCpus, parseMemoryMiB, parseSeconds, parseSize } from '../vm/parse.js';
import { nicsFromFlags } from '../vm/nics.js';
import { netResolver } from '../net/vm-hooks.js';
import { reconcile, vmInfo, vmPaths } from '../vm/state.js';
import { UsageError } from '../errors.js';
import { trace } from '../util/trace.js';
import {
  loadCloudInitInputs,
  nicsForCloudInit,
  writeCloudInit,
  type CloudInitInputs,
  type NicConfig,
} from '../vm/cloudinit.js';
import { withSshForward } from '../vm/ssh.js';
import type { AccelRequest, VmSpec } from '../vm/types.js';
import type { ImageSpec } from '../image/types.js';
import type { VmPaths } from '../vm/state.js';

export const runCommand: Command = {
  name: 'run',
  summary: 'create and start a VM (default image: tiny)',
  usage:
    'run [IMAGE] [--name N] [--cpus N] [--memory 512M] [--nested] [--accel auto|kvm|tcg] [--net user] [--port HOST:GUEST]... [--user-data FILE] [--ssh-key FILE]... [--wait] [--json]',
  description: [
    "Creates a VM from IMAGE (a qcow2 overlay over the image's disk, which is never written)",
    'and starts it under QEMU in the background. --wait blocks until the guest agent answers',
    'and prints the time to ready. --accel auto uses KVM when this machine really runs KVM',
    "guests (doctor's probe) and says on stderr why it falls back to TCG otherwise.",
    '--nested exposes VT-x/AMD-V to the guest (-cpu host under KVM, -cpu max under TCG).',
    'Images with cloud-init get a NoCloud seed: --user-data (#cloud-config, #! script or MIME',
    'multipart, checked first) and --ssh-key (else a key made for the VM); images with sshd get',
    'a free 127.0.0.1 port forwarded to port 22 for `nestvirt ssh` (docs/cloud-init.md).',
    '',
    'examples:',
    '  nestvirt run --name t1 --wait',
    '  nestvirt run tiny --name hv --nested --memory 1G --cpus 2 --wait',
    '  nestvirt run --name web --port 8080:80 --port 127.0.0.1:5353:53/udp',
    '  nestvirt run debian-ci --name web --user-data web.yaml --ssh-key ~/.ssh/id_ed25519.pub --wait',
    '  nestvirt run --name k --kernel ./vmlinux --initrd ./initrd.img --append console=ttyS0',
  ].join('\n'),
  positionals: [0, 1],
  flags: {
    name: {
      type: 'string',
      arg: 'NAME',
      help: 'VM name (default: generated, e.g. tiny-keen-otter-3f2a)',
    },
    cpus: { type: 'string', arg: 'N', help: 'virtual CPUs (default 1)' },
    memory: { type: 'string', arg: 'SIZE', help: 'memory, e.g. 512M or 2G (default 512M)' },
    'disk-size': {
      type: 'string',
      arg: 'SIZE',
      help: "disk size (grows the image's disk; a blank disk when it has none)",
    },
    nested: { type: 'boolean', help: 'expose VT-x/AMD-V so the guest can run VMs itself' },
    accel: { type: 'string', arg: 'auto|kvm|tcg', help: 'accelerator (default auto)' },
    kernel: {
      type: 'string',
      arg: 'FILE',
      help: 'boot this kernel directly (IMAGE optional then)',
    },
    initrd: { type: 'string', arg: 'FILE', help: 'initial ramdisk for --kernel' },
    append: { type: 'string', arg: 'CMDLINE', help: "kernel command line (added to the image's)" },
    net: {
      type: 'string',
      multiple: true,
      arg: 'NET',
      help: 'network: user (default, NAT), none, or a nestvirt network',
    },
    port: {
      type: 'string',
      multiple: true,
      arg: '[ADDR:]HOST:GUEST[/udp]',
      help: 'forward a host port (127.0.0.1 unless ADDR) to the guest (user network)',
    },
    'user-data': {
      type: 'string',
      arg: 'FILE',
      help: 'cloud-init user-data: #cloud-config YAML, a #! script or MIME multipart',
    },
    'ssh-key': {
      type: 'string',
      multiple: true,
      arg: 'FILE',
      help: "ssh public key (.pub) for the image's user (repeatable; default: a key made for the VM)",
    },
    wait: { type: 'boolean', help: 'wait until the guest agent answers; print the time to ready' },
    'wait-timeout': {
      type: 'string',
      arg: 'SECONDS',
      help: 'give up waiting after this long (default 300)',
    },
    'no-start': { type: 'boolean', help: 'create the VM but do not start it' },
    json: { type: 'boolean', help: 'print the VM as JSON (schema: docs/vms.md)' },
  },
  async run(args, ctx) {
    const json = bool(args, 'json');
    const image = args.positionals[0] ?? (str(args, 'kernel') ? undefined : 'tiny');
    const accel = (str(args, 'accel') ?? 'auto') as AccelRequest;
    if (!['auto', 'kvm', 'tcg'].includes(accel))
      throw new UsageError(
        'vm.bad-accel',
        `--accel must be auto, kvm or tcg, got ${JSON.stringify(accel)}`,
      );
    if (str(args, 'initrd') && !str(args, 'kernel'))
      throw new UsageError('vm.bad-boot', '--initrd needs --kernel');
    const name = str(args, 'name') ?? generateName(image ?? 'vm');
    const cpus = parseCpus(str(args, 'cpus') ?? '1');
    const memoryMiB = parseMemoryMiB(str(args, 'memory') ?? '512M');
    const ds = str(args, 'disk-size');
    const diskSizeBytes = ds ? parseSize('--disk-size', ds) : undefined;
    const waitS = parseSeconds('--wait-timeout', str(args, 'wait-timeout') ?? '300');
    const nics = await nicsFromFlags(
      list(args, 'net'),
      list(args, 'port'),
      name,
      netResolver({ root: vmDeps(ctx).root, run: ctx.run, uid: ctx.uid }),
    );
    const deps = vmDeps(ctx);
    const progress = new Progress(ctx.out);
    // cloud-init (docs/cloud-init.md): --user-data and --ssh-key are checked
    // against the image before anything exists; sshd gets a forwarded port.
    const userData = str(args, 'user-data');
    const sshKeys = list(args, 'ssh-key');
    let cloudInit: CloudInitInputs | undefined;
    let runNics = nics;
    let networkConfig: NicConfig[] | undefined;
    const lookup = images();
    let looked: ImageSpec | undefined;
    if (image && lookup) {
      const img = (looked = await lookup({
        root: deps.root,
        name: image,
        run: ctx.run,
        env: ctx.env,
        progress,
      } as Parameters<typeof lookup>[0]));
      cloudInit = await loadCloudInitInputs(
        { ...(userData !== undefined ? { userData } : {}), sshKeys },
        img,
      );
      runNics = await withSshForward(nics, img.features);
      if (cloudInit) {
        const net = nicsForCloudInit(name, runNics);
        runNics = net.nics;
        networkConfig = net.config;
      }
    } else if (userData !== undefined || sshKeys.length)
      throw new UsageError(
        'cloudinit.no-image',
        '--user-data and --ssh-key need an IMAGE with cloud-init',
        'e.g. nestvirt run debian-ci --user-data FILE',
      );
    trace('run: image looked up');
    await createVm(
      {
        name,
        ...(image ? { image } : {}),
        cpus,
        memoryMiB,
        ...(diskSizeBytes ? { diskSizeBytes } : {}),
        nested: bool(args, 'nested'),
        accel,
        ...(str(args, 'kernel') ? { kernel: str(args, 'kernel')! } : {}),
        ...(str(args, 'initrd') ? { initrd: str(args, 'initrd')! } : {}),
        ...(str(args, 'append') ? { append: str(args, 'append')! } : {}),
        nics: runNics,
        // The seed is written into the VM dir under the VM's lock before
        // spec.json; a failure removes the half-made VM (createVm's prepare).
        ...(cloudInit
          ? {
              prepare: async (paths: VmPaths, spec: VmSpec) => {
                const inputs = cloudInit!;
                await progress.step('write the cloud-init seed', () =>
                  writeCloudInit(
                    { name, dir: paths.dir, createdAt: spec.createdAt },
                    {},
                    inputs,
                    ctx.run,
                    networkConfig,
                  ),
                );
                return { seed: paths.seed };
              },
            }
          : {}),
      },
      { ...deps, progress },
      // The image was just looked up (and built if needed): createVm reuses it.
      lookup && ((o) => (looked && o.name === image ? Promise.resolve(looked) : lookup(o))),
    );
    trace('run: created');
    let readyMs: number | null = null;
    if (!bool(args, 'no-start')) {
      try {
        const s = await progress.step(`start VM ${name}`, () => startVm(name, deps));
        if (bool(args, 'wait')) {
          const r = await progress.step(`wait for VM ${name}'s guest agent`, () =>
            waitReady(name, deps, waitS * 1000),
          );
          readyMs = r.readyMs;
        }
        void s;
      } catch (e) {
        // run = create + start: a VM that cannot start is not left behind.
        if (
          !bool(args, 'wait') ||
          (e as { code?: string }).code === 'vm.qemu-failed' ||
          (e as { code?: string }).code === 'vm.no-kvm'
        )
          await rmVm(name, deps, { force: true }).catch(() => {});
        throw e;
      }
    }
    const p = vmPaths(deps.root, name);
    const info = vmInfo(p, await reconcile(p, { write: 'no' }));
    if (json) printJson(ctx.out, { ...info, readyMs: readyMs ?? info.readyMs });
    else if (readyMs !== null)
      println(ctx.out, `${name} ready in ${(readyMs / 1000).toFixed(2)} s`);
    else println(ctx.out, bool(args, 'no-start') ? `${name} created` : `${name} started`);
    trace('run: printed');
    return 0;
  },
};
