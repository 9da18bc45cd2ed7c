/**
 * Building the built-in images. Each build runs in a temporary directory
 * next to the image's and is renamed into place at the end (store.ts), so a
 * crash or a full disk never leaves a half-made image.
 *
 *   tiny        vmlinux + initramfs (busybox, qemu-ga, modules, /init)
 *   hypervisor  the same kernel and initramfs + an ext4 root disk (label
 *               nestvirt-root) carrying QEMU, node, this nestvirt build and
 *               the `tiny` image pre-seeded in /var/lib/nestvirt/images/tiny
 */
import { crypto } from '../util/lazy.js';
import { createWriteStream, readFileSync } from 'node:fs';
import {
  copyFile,
  link,
  mkdir,
  readdir,
  readFile,
  realpath,
  rm,
  stat,
  utimes,
  writeFile,
} from 'node:fs/promises';
import { dirname, join, relative } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { PassThrough } from 'node:stream';
import { createGzip, constants as zc } from 'node:zlib';
import type { Runner } from '../util/exec.js';
import { NestvirtError } from '../errors.js';
import { PROJECT_ROOT, VERSION } from '../version.js';
import { Files } from '../state/paths.js';
import { writeJson } from '../state/store.js';
import {
  probeQemu,
  qemuFeaturesKey,
  QEMU_FEATURES_CACHE,
  type CachedQemuFeatures,
} from '../vm/features.js';

/** The state root inside the hypervisor image (root's default, src/state/paths.ts). */
const GUEST_STATE_ROOT = 'var/lib/nestvirt';
import type { ImageSpec } from './types.js';
import {
  HOST_PACKAGES,
  INITRAMFS_COMPRESSION,
  IMAGE_MODULES,
  READY_MARKER,
  RECIPE_VERSION,
  inputsHash,
  kernelCmdline,
  type BuiltinName,
  type Inputs,
} from './recipe.js';
import { HYPERVISOR_PREFETCH, PREFETCH_LIST, ROOTFS_MARKER, guestFiles } from './guest.js';
import {
  bundleModules,
  ensureKernelBundle,
  ensureKernelDeb,
  resolveKernel,
  type KernelBundle,
  type KernelPackage,
} from './kernel.js';
import {
  copyIn,
  copyLibs,
  sharedLibs,
  copyProgram,
  copyTree,
  findProgram,
  installBusybox,
  installModules,
  skeleton,
  treeSize,
  writeGuestFiles,
} from './assemble.js';
import { writeCpio } from './cpio.js';

/** File names inside a built-in image's directory. */
export const ImageFiles = {
  kernel: 'vmlinux',
  /** The original compressed kernel (kept for firmware boot or a PVH-less QEMU). */
  bzImage: 'bzImage',
  initrd: 'initrd.img',
  /** The root disk is named after the inputs hash (root-<hash>.img): overlays of VMs made from an older build keep their backing file across rebuilds. */
  rootDiskPrefix: 'root-',
} as const;

/** The hypervisor root disk's file name for a given inputs hash. */
export function rootDiskName(hash: string): string {
  return `${ImageFiles.rootDiskPrefix}${hash.slice(0, 12)}.img`;
}

/** Label of the hypervisor image's root filesystem (the initramfs finds it by label). */
export const ROOT_LABEL = 'nestvirt-root';

/** A step runner: Progress.step when given, else just the work. */
export type Step = <T>(
  title: string,
  fn: (update: (detail: string) => void) => Promise<T>,
) => Promise<T>;

export interface BuildContext {
  run: Runner;
  env: NodeJS.ProcessEnv;
  cacheDir: string;
  step: Step;
  /** Returns the `tiny` image (built when needed); the hypervisor build embeds it. */
  tiny: () => Promise<ImageSpec>;
}

/** Versions of the installed Debian packages an image copies files from. */
export async function packageVersions(run: Runner, pkgs: readonly string[]): Promise<Inputs> {
  const r = await run(['dpkg-query', '-W', '-f', '${Package}=${Version}\n', ...pkgs], {
    check: false,
  });
  const out: Inputs = {};
  for (const line of r.stdout.split('\n')) {
    const [k, v] = line.split('=');
    if (k && v) out[`deb:${k}`] = v;
  }
  const missing = pkgs.filter((p) => !out[`deb:${p}`]);
  if (missing.length)
    throw new NestvirtError(
      'image.missing-package',
      `Debian packages needed to build the image are not installed: ${missing.join(', ')}`,
      {
        hint: 'run scripts/setup.sh (it installs the Debian packages nestvirt uses)',
        exitCode: 1,
      },
    );
  return out;
}

/**
 * A hash of this nestvirt build as the hypervisor image carries it:
 * package.json, bin, the bundled CLI (dist/cli) and the name and version of
 * each production npm package. Versions, not contents: hashing every file
 * of node_modules took over a second on each `nestvirt run hypervisor`.
 */
export async function nestvirtBuildId(root = PROJECT_ROOT): Promise<string> {
  const h = crypto().createHash('sha256');
  const files = [
    join(root, 'package.json'),
    ...(await listFiles(join(root, 'bin'))),
    // Not the code cache: it derives from app.cjs and node, and V8 does not
    // promise the same bytes from one build to the next.
    ...(await listFiles(join(root, 'dist', 'cli'))).filter((f) => !f.endsWith('.cache')),
  ];
  for (const f of files.sort()) {
    h.update(relative(root, f) + '\0');
    h.update(readFileSync(f));
  }
  const versions = productionPackages(root);
  for (const d of [...versions.keys()].sort()) h.update(`npm:${d}@${versions.get(d)}\0`);
  return h.digest('hex').slice(0, 16);
}

async function listFiles(dir: string): Promise<string[]> {
  let ents;
  try {
    ents = await readdir(dir, { withFileTypes: true });
  } catch {
    return [];
  }
  const out: string[] = [];
  for (const e of ents) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...(await listFiles(p)));
    else if (e.isFile()) out.push(p);
  }
  return out;
}

/** Names of the packages under node_modules needed at run time (dependencies, recursively). */
export async function productionModules(root = PROJECT_ROOT): Promise<string[]> {
  return [...productionPackages(root).keys()].sort();
}

/**
 * The production packages with their versions ('-' when not installed), in
 * one pass over their package.json files: synchronous reads, since
 * `nestvirt run hypervisor` does this on every start (its image's build id).
 */
function productionPackages(root: string): Map<string, string> {
  const seen = new Map<string, string>();
  const visit = (pkgJson: string): string => {
    let j: {
      version?: string;
      dependencies?: Record<string, string>;
      optionalDependencies?: Record<string, string>;
    };
    try {
      j = JSON.parse(readFileSync(pkgJson, 'utf8')) as typeof j;
    } catch {
      return '-';
    }
    for (const d of Object.keys({ ...j.dependencies, ...j.optionalDependencies })) {
      if (seen.has(d)) continue;
      seen.set(d, '-'); // marked before the visit: a dependency cycle ends here
      seen.set(d, visit(join(root, 'node_modules', d, 'package.json')));
    }
    return j.version ?? '-';
  };
  visit(join(root, 'package.json'));
  return seen;
}

/** Everything a built-in's content depends on; its hash decides whether to rebuild. */
export async function builtinInputs(
  name: BuiltinName,
  ctx: { run: Runner; cacheDir: string; tinyHash?: string },
): Promise<{ inputs: Inputs; kernel: KernelPackage }> {
  const kernel = await resolveKernel(ctx.run, ctx.cacheDir);
  const inputs: Inputs = {
    recipe: String(RECIPE_VERSION),
    kernel: `${kernel.name}=${kernel.version}`,
    ...(await packageVersions(ctx.run, HOST_PACKAGES[name])),
    // The rendered /init and friends: a change to the guest side rebuilds the image.
    guest: crypto()
      .createHash('sha256')
      .update(JSON.stringify(guestFiles({ hostname: name })))
      .digest('hex')
      .slice(0, 16),
  };
  if (name === 'hypervisor') {
    inputs.node = process.version;
    inputs.nestvirt = `${VERSION}+${await nestvirtBuildId()}`;
    if (ctx.tinyHash) inputs.tiny = ctx.tinyHash;
  }
  return { inputs, kernel };
}

async function fetchKernel(ctx: BuildContext, kernel: KernelPackage): Promise<KernelBundle> {
  const deb = await ctx.step(`download kernel ${kernel.name} ${kernel.version}`, async (update) => {
    update('apt-get download');
    return ensureKernelDeb(ctx.run, ctx.cacheDir, kernel);
  });
  return ctx.step('extract kernel and modules', async () =>
    ensureKernelBundle(ctx.run, ctx.cacheDir, kernel, deb),
  );
}

/** Fills `stage` with the base system shared by both built-ins. */
async function baseSystem(
  ctx: BuildContext,
  stage: string,
  bundle: KernelBundle,
  name: BuiltinName,
): Promise<void> {
  await skeleton(stage);
  await installBusybox(ctx.run, stage);
  await copyProgram(ctx.run, stage, await findProgram('qemu-ga'), 'usr/sbin/qemu-ga');
  await installModules(ctx.run, stage, bundle, await bundleModules(bundle, IMAGE_MODULES[name]));
  await writeGuestFiles(stage, guestFiles({ hostname: name }));
}

/** Hard-links (same filesystem) or copies a file. */
async function place(src: string, dest: string): Promise<void> {
  try {
    await link(src, dest);
  } catch {
    await copyFile(src, dest);
  }
}

/** Writes a newc archive of `stage` to `out`, uncompressed or gzip level 1 (see INITRAMFS_COMPRESSION). */
export async function packInitramfs(
  stage: string,
  out: string,
  compression: 'none' | 'gzip' = INITRAMFS_COMPRESSION,
): Promise<void> {
  const pass = new PassThrough({ highWaterMark: 1 << 20 });
  const done =
    compression === 'gzip'
      ? pipeline(
          pass,
          createGzip({ level: 1, strategy: zc.Z_DEFAULT_STRATEGY }),
          createWriteStream(out),
        )
      : pipeline(pass, createWriteStream(out));
  await writeCpio(stage, pass);
  pass.end();
  await done;
}

/** Builds `tiny` into `dir` (an empty temp directory); returns its spec with final paths. */
export async function buildTiny(
  ctx: BuildContext,
  dir: string,
  finalDir: string,
  inputs: Inputs,
  kernel: KernelPackage,
): Promise<ImageSpec> {
  const bundle = await fetchKernel(ctx, kernel);
  const stage = join(dir, '.stage');
  await ctx.step('assemble tiny (busybox, qemu-ga, modules, /init)', async () =>
    baseSystem(ctx, stage, bundle, 'tiny'),
  );
  await ctx.step(
    `pack initramfs (cpio, ${INITRAMFS_COMPRESSION === 'none' ? 'uncompressed' : 'gzip'})`,
    async () => {
      await packInitramfs(stage, join(dir, ImageFiles.initrd));
      await rm(stage, { recursive: true, force: true });
      await place(bundle.vmlinux, join(dir, ImageFiles.kernel));
    },
  );
  return {
    name: 'tiny',
    builtin: true,
    kernel: join(finalDir, ImageFiles.kernel),
    initrd: join(finalDir, ImageFiles.initrd),
    cmdline: kernelCmdline(),
    features: {
      guestAgent: true,
      sshd: false,
      cloudInit: false,
      kvmModules: true,
      nestvirt: false,
    },
    arch: 'x86_64',
    inputsHash: inputsHash(inputs),
    inputs,
    readyMarker: READY_MARKER,
    kernelRelease: bundle.release,
    minMemoryMiB: 128,
    sizeBytes: await treeSize(dir),
    createdAt: new Date().toISOString(),
  };
}

/** Builds `hypervisor` into `dir`; returns its spec with final paths. */
export async function buildHypervisor(
  ctx: BuildContext,
  dir: string,
  finalDir: string,
  inputs: Inputs,
  kernel: KernelPackage,
): Promise<ImageSpec> {
  const tiny = await ctx.tiny();
  const bundle = await fetchKernel(ctx, kernel);
  const stage = join(dir, '.root');
  await ctx.step('assemble hypervisor root (QEMU, node, nestvirt, modules)', async (update) => {
    await baseSystem(ctx, stage, bundle, 'hypervisor');
    update('qemu');
    for (const p of ['qemu-system-x86_64', 'qemu-img'])
      await copyProgram(ctx.run, stage, await findProgram(p));
    // What `nestvirt run` inside would probe first (4 QEMU starts under TCG,
    // seconds): the same binary's features, cached for its guest path.
    const qemu = await findProgram('qemu-system-x86_64');
    const hostQemu = await stat(qemu);
    await utimes(join(stage, qemu), hostQemu.atime, hostQemu.mtime);
    const cached: CachedQemuFeatures = {
      key: qemuFeaturesKey(await realpath(qemu), hostQemu),
      features: { ...(await probeQemu(ctx.run, qemu)), binary: qemu },
    };
    await writeJson(join(stage, GUEST_STATE_ROOT, QEMU_FEATURES_CACHE), cached);
    const libs = new Set<string>();
    for (const prog of [qemu, process.execPath])
      for (const lib of await sharedLibs(ctx.run, prog)) libs.add(lib.replace(/^\//, ''));
    await writeGuestFiles(stage, [
      {
        path: PREFETCH_LIST,
        content: [...HYPERVISOR_PREFETCH, ...libs].join('\n') + '\n',
        mode: 0o644,
      },
    ]);
    const qemuMods = '/usr/lib/x86_64-linux-gnu/qemu';
    for (const f of await readdir(qemuMods).catch(() => [] as string[]))
      if (f.startsWith('accel-')) {
        await copyIn(stage, join(qemuMods, f));
        await copyLibs(ctx.run, stage, join(qemuMods, f));
      }
    for (const d of ['/usr/share/qemu', '/usr/share/seabios', '/usr/share/ipxe'])
      if (await exists(d)) await copyTree(d, join(stage, d));
    for (const p of ['mkfs.ext4', 'e2fsck'])
      await copyProgram(ctx.run, stage, await findProgram(p)).catch(() => undefined);
    update('node');
    await copyProgram(ctx.run, stage, process.execPath, 'usr/bin/node');
    update('nestvirt');
    const opt = join(stage, 'opt/nestvirt');
    await mkdir(opt, { recursive: true });
    await copyFile(join(PROJECT_ROOT, 'package.json'), join(opt, 'package.json'));
    await copyTree(join(PROJECT_ROOT, 'bin'), join(opt, 'bin'));
    await copyTree(join(PROJECT_ROOT, 'dist', 'cli'), join(opt, 'dist', 'cli'));
    for (const m of await productionModules())
      await copyTree(join(PROJECT_ROOT, 'node_modules', m), join(opt, 'node_modules', m));
    update('tiny image');
    const seeded = join(stage, 'var/lib/nestvirt/images/tiny');
    await mkdir(seeded, { recursive: true });
    for (const f of [ImageFiles.kernel, ImageFiles.initrd])
      await copyFile(join(dirname(tiny.kernel!), f), join(seeded, f));
    const guestTiny: ImageSpec = {
      ...tiny,
      kernel: `/var/lib/nestvirt/images/tiny/${ImageFiles.kernel}`,
      initrd: `/var/lib/nestvirt/images/tiny/${ImageFiles.initrd}`,
    };
    await writeFile(join(seeded, Files.spec), JSON.stringify(guestTiny, null, 2) + '\n');
    // The guest has no dpkg or apt: its inputs stamp (see store.ts) is the recipe alone,
    // so getImage('tiny') inside takes the fast path.
    await writeFile(join(seeded, '.inputs-stamp'), `r${RECIPE_VERSION} - - -`);
    await writeGuestFiles(stage, [
      {
        path: 'usr/bin/nestvirt',
        content: '/opt/nestvirt/bin/nestvirt',
        mode: 0o777,
        symlink: true,
      },
      {
        path: ROOTFS_MARKER,
        content: `nestvirt hypervisor root, nestvirt ${VERSION}\n`,
        mode: 0o644,
      },
      {
        path: 'etc/modprobe.d/nestvirt-kvm.conf',
        content: 'options kvm_amd nested=1\noptions kvm_intel nested=1\n',
        mode: 0o644,
      },
    ]);
  });
  await ctx.step('make root disk (mkfs.ext4 -d)', async () => {
    const bytes = await treeSize(stage);
    // Headroom for what the guest writes (VM state under /var/lib/nestvirt); the raw file is sparse.
    const mib = Math.ceil((bytes * 1.15) / (1 << 20)) + 512;
    const img = join(dir, rootDiskName(inputsHash(inputs)));
    await writeFile(img, '');
    await ctx.run(
      [
        await findProgram('mkfs.ext4'),
        '-q',
        '-F',
        '-L',
        ROOT_LABEL,
        '-d',
        stage,
        '-E',
        'root_owner=0:0',
        '-O',
        '^has_journal',
        img,
        `${mib}M`,
      ],
      { timeoutMs: 10 * 60_000 },
    );
    await rm(stage, { recursive: true, force: true });
    await place(join(dirname(tiny.kernel!), ImageFiles.initrd), join(dir, ImageFiles.initrd));
    await place(bundle.vmlinux, join(dir, ImageFiles.kernel));
  });
  return {
    name: 'hypervisor',
    builtin: true,
    kernel: join(finalDir, ImageFiles.kernel),
    initrd: join(finalDir, ImageFiles.initrd),
    cmdline: kernelCmdline({ rootLabel: ROOT_LABEL }),
    disk: join(finalDir, rootDiskName(inputsHash(inputs))),
    diskFormat: 'raw',
    features: { guestAgent: true, sshd: false, cloudInit: false, kvmModules: true, nestvirt: true },
    arch: 'x86_64',
    inputsHash: inputsHash(inputs),
    inputs,
    readyMarker: READY_MARKER,
    kernelRelease: bundle.release,
    minMemoryMiB: 1024,
    sizeBytes: await treeSize(dir),
    createdAt: new Date().toISOString(),
  };
}

async function exists(p: string): Promise<boolean> {
  try {
    await stat(p);
    return true;
  } catch {
    return false;
  }
}
