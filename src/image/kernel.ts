/**
 * The Debian kernel of the built-in images: which package (apt's current
 * linux-image for this release), its .deb in the cache (`apt-get download`,
 * apt's normal client, no root needed), and a cached "kernel bundle"
 * extracted from it: an uncompressed vmlinux (fast PVH boot under TCG), the
 * original bzImage, and the modules any built-in image needs.
 */
import { spawn } from 'node:child_process';
import {
  copyFile,
  mkdir,
  open,
  readdir,
  readFile,
  rename,
  rm,
  stat,
  writeFile,
  mkdtemp,
} from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { NotPossibleError, NestvirtError } from '../errors.js';
import type { Runner } from '../util/exec.js';
import { withLock } from '../state/lock.js';
import {
  BUILTINS,
  IMAGE_MODULES,
  KERNEL_META_PACKAGE,
  RECIPE_VERSION,
  bzImagePayload,
  moduleClosure,
} from './recipe.js';

export interface KernelPackage {
  /** e.g. linux-image-6.1.0-56-amd64 */
  name: string;
  /** e.g. 6.1.192-2 */
  version: string;
}

/** The package a meta package depends on (`apt-cache depends` output). */
export function parseAptDepends(text: string): string | undefined {
  const m = /^\s*Depends:\s*(linux-image-[^\s<>]+)/m.exec(text);
  return m?.[1];
}

/** The Version: field of `apt-cache show` output (first record). */
export function parseAptVersion(text: string): string | undefined {
  return /^Version:\s*(\S+)/m.exec(text)?.[1];
}

/** How apt-get download names a .deb (an epoch's ':' becomes %3a). */
export function debFileName(p: KernelPackage, arch = 'amd64'): string {
  return `${p.name}_${p.version.replace(/:/g, '%3a')}_${arch}.deb`;
}

/** Parses a cached .deb file name back into a package (inverse of debFileName). */
export function parseDebFileName(file: string): KernelPackage | undefined {
  const m = /^(linux-image-[^_]+)_([^_]+)_amd64\.deb$/.exec(file);
  return m ? { name: m[1]!, version: m[2]!.replace(/%3a/gi, ':') } : undefined;
}

/**
 * The kernel package to use: apt's current one when apt knows it, else the
 * newest one already in the cache (offline), else a NotPossibleError.
 */
export async function resolveKernel(run: Runner, cacheDir: string): Promise<KernelPackage> {
  const dep = await run(['apt-cache', 'depends', KERNEL_META_PACKAGE], { check: false }).catch(
    () => undefined,
  );
  const name = dep && dep.code === 0 ? parseAptDepends(dep.stdout) : undefined;
  if (name) {
    const show = await run(['apt-cache', 'show', '--no-all-versions', name], { check: false });
    const version = show.code === 0 ? parseAptVersion(show.stdout) : undefined;
    if (version) return { name, version };
  }
  const cached = (await readdir(cacheDir).catch(() => [] as string[]))
    .map(parseDebFileName)
    .filter((p): p is KernelPackage => !!p)
    .sort((a, b) => (a.name + a.version < b.name + b.version ? 1 : -1));
  if (cached[0]) return cached[0];
  throw new NotPossibleError(
    'image.no-kernel',
    `apt does not know ${KERNEL_META_PACKAGE} and no kernel .deb is cached in ${cacheDir}`,
    'run `apt-get update` (Debian), or put a linux-image-*-amd64 .deb into that cache directory (NESTVIRT_CACHE)',
  );
}

/** Makes sure the kernel .deb is in the cache; returns its path. */
export async function ensureKernelDeb(
  run: Runner,
  cacheDir: string,
  pkg: KernelPackage,
): Promise<string> {
  const path = join(cacheDir, debFileName(pkg));
  if (await exists(path)) return path;
  await mkdir(cacheDir, { recursive: true });
  const tmp = await mkdtemp(join(cacheDir, '.download-'));
  try {
    const r = await run(['apt-get', 'download', `${pkg.name}=${pkg.version}`], {
      cwd: tmp,
      check: false,
      timeoutMs: 30 * 60_000,
    });
    const got = (await readdir(tmp)).find((f) => f.endsWith('.deb'));
    if (r.code !== 0 || !got)
      throw new NotPossibleError(
        'image.kernel-download',
        `apt-get download ${pkg.name}=${pkg.version} failed: ${(r.stderr.trim().split('\n').pop() ?? '').trim()}`,
        'check apt (apt-get update; the Debian mirror must be reachable) or put the .deb into the cache directory (NESTVIRT_CACHE)',
      );
    await rename(join(tmp, got), path);
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
  return path;
}

/** A kernel extracted for the built-ins. */
export interface KernelBundle {
  dir: string;
  /** Uncompressed ELF kernel (PVH entry point): `-kernel` boots it directly. */
  vmlinux: string;
  bzImage: string;
  /** Kernel release, e.g. 6.1.0-56-amd64 (the lib/modules folder name). */
  release: string;
  /** <dir>/modules/<release>: modules.order, modules.builtin*, kernel/... */
  modulesDir: string;
}

function bundleDir(cacheDir: string, pkg: KernelPackage): string {
  return join(
    cacheDir,
    'kernel',
    `${pkg.name}_${pkg.version.replace(/:/g, '%3a')}.r${RECIPE_VERSION}`,
  );
}

/** Extracts (once, cached) the kernel bundle from the .deb. */
export async function ensureKernelBundle(
  run: Runner,
  cacheDir: string,
  pkg: KernelPackage,
  deb: string,
): Promise<KernelBundle> {
  const dir = bundleDir(cacheDir, pkg);
  await mkdir(dirname(dir), { recursive: true });
  return withLock(
    join(cacheDir, 'kernel', '.lock'),
    'the kernel cache',
    async () => {
      const ready = await readBundle(dir);
      if (ready) return ready;
      const tmp = await mkdtemp(join(dirname(dir), '.extract-'));
      try {
        const tree = join(tmp, 'deb');
        await run(['dpkg-deb', '-x', deb, tree], { timeoutMs: 10 * 60_000 });
        const release = (await readdir(join(tree, 'lib', 'modules')))[0];
        if (!release) throw new NestvirtError('image.bad-kernel-deb', `${deb} has no lib/modules`);
        const out = join(tmp, 'bundle');
        const mods = join(out, 'modules', release);
        await mkdir(mods, { recursive: true });
        await copyFile(join(tree, 'boot', `vmlinuz-${release}`), join(out, 'bzImage'));
        await extractVmlinux(join(out, 'bzImage'), join(out, 'vmlinux'));
        const src = join(tree, 'lib', 'modules', release);
        const order = (await readFile(join(src, 'modules.order'), 'utf8'))
          .split('\n')
          .filter(Boolean);
        const builtin = new Set(
          (await readFile(join(src, 'modules.builtin'), 'utf8'))
            .split('\n')
            .filter(Boolean)
            .map((p) => p.replace(/^.*\//, '').replace(/\.ko$/, '').replace(/-/g, '_')),
        );
        const deps = await moduleDepends(run, src, order);
        const want = [...new Set(BUILTINS.flatMap((b) => IMAGE_MODULES[b]))];
        const files = moduleClosure(want, order, (p) => deps.get(p) ?? [], builtin);
        for (const f of files) {
          await mkdir(dirname(join(mods, f)), { recursive: true });
          await copyFile(join(src, f), join(mods, f));
        }
        for (const f of ['modules.order', 'modules.builtin', 'modules.builtin.modinfo'])
          await copyFile(join(src, f), join(mods, f));
        await writeFile(
          join(mods, 'nestvirt-depends.json'),
          JSON.stringify(Object.fromEntries(files.map((f) => [f, deps.get(f) ?? []]))),
        );
        await writeFile(join(out, 'release'), release + '\n');
        await rm(tree, { recursive: true, force: true });
        await rename(out, dir);
      } finally {
        await rm(tmp, { recursive: true, force: true });
      }
      const done = await readBundle(dir);
      if (!done)
        throw new NestvirtError('image.kernel-bundle', `kernel bundle ${dir} is incomplete`);
      return done;
    },
    { waitMs: 20 * 60_000 },
  );
}

async function readBundle(dir: string): Promise<KernelBundle | undefined> {
  try {
    const release = (await readFile(join(dir, 'release'), 'utf8')).trim();
    return {
      dir,
      vmlinux: join(dir, 'vmlinux'),
      bzImage: join(dir, 'bzImage'),
      release,
      modulesDir: join(dir, 'modules', release),
    };
  } catch {
    return undefined;
  }
}

/** `depends:` of every module file (one modinfo call for all of them). */
async function moduleDepends(
  run: Runner,
  modulesDir: string,
  order: string[],
): Promise<Map<string, string[]>> {
  // modinfo prints one line per file given; keep the order to pair them up.
  const out = new Map<string, string[]>();
  const chunk = 400;
  for (let i = 0; i < order.length; i += chunk) {
    const part = order.slice(i, i + chunk);
    const r = await run([
      'modinfo',
      '-0',
      '-F',
      'depends',
      ...part.map((p) => join(modulesDir, p)),
    ]);
    const vals = r.stdout.split('\0');
    part.forEach((p, j) => out.set(p, (vals[j] ?? '').trim().split(',').filter(Boolean)));
  }
  return out;
}

/** The module files (relative to modulesDir) an image needs, from the bundle's recorded dependencies. */
export async function bundleModules(b: KernelBundle, want: readonly string[]): Promise<string[]> {
  const deps = JSON.parse(
    await readFile(join(b.modulesDir, 'nestvirt-depends.json'), 'utf8'),
  ) as Record<string, string[]>;
  const order = (await readFile(join(b.modulesDir, 'modules.order'), 'utf8'))
    .split('\n')
    .filter((p) => p in deps);
  const builtin = new Set(
    (await readFile(join(b.modulesDir, 'modules.builtin'), 'utf8'))
      .split('\n')
      .filter(Boolean)
      .map((p) => p.replace(/^.*\//, '').replace(/\.ko$/, '').replace(/-/g, '_')),
  );
  return moduleClosure(want, order, (p) => deps[p] ?? [], builtin);
}

/**
 * Unpacks the kernel inside a bzImage into an ELF vmlinux. xz (Debian's
 * choice) exits non-zero on the 4-byte size trailer after the stream, so the
 * output is checked against that recorded size instead.
 */
export async function extractVmlinux(bzImage: string, out: string): Promise<void> {
  const buf = await readFile(bzImage);
  const p = bzImagePayload(buf);
  const tool: Record<string, string[]> = {
    xz: ['xz', '-dc'],
    gzip: ['gzip', '-dc'],
    zstd: ['zstd', '-dcq'],
    lz4: ['lz4', '-dc'],
  };
  const argv = tool[p.format];
  if (!argv) throw new NestvirtError('image.bad-kernel', `${bzImage}: unknown kernel compression`);
  const payload = out + '.payload';
  await writeFile(payload, buf.subarray(p.offset, p.offset + p.length));
  try {
    await pipeFileThrough(argv, payload, out);
  } finally {
    await rm(payload, { force: true });
  }
  const size = (await stat(out)).size;
  const head = await readFile(out).then((b) => b.subarray(0, 4));
  if (size !== p.uncompressedSize || head.toString('latin1') !== '\x7fELF')
    throw new NestvirtError(
      'image.bad-kernel',
      `${bzImage}: unpacked kernel is ${size} bytes, expected ${p.uncompressedSize} (an ELF file)`,
    );
}

/** Runs argv with stdin from a file and stdout into a file (binary-safe); ignores the exit code. */
export async function pipeFileThrough(
  argv: string[],
  input: string,
  output: string,
): Promise<number | null> {
  const inp = await open(input, 'r');
  const outp = await open(output, 'w');
  try {
    return await new Promise((resolve, reject) => {
      const child = spawn(argv[0]!, argv.slice(1), { stdio: [inp.fd, outp.fd, 'ignore'] });
      child.on('error', reject);
      child.on('close', (code) => resolve(code));
    });
  } finally {
    await inp.close();
    await outp.close();
  }
}

async function exists(p: string): Promise<boolean> {
  try {
    await stat(p);
    return true;
  } catch {
    return false;
  }
}
