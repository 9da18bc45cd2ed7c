/**
 * The image store: <root>/images/NAME/ holds spec.json (an ImageSpec) and
 * the image's files. Built-ins are built on first use and rebuilt when their
 * inputs change; every build or import happens in a temporary directory
 * renamed into place, under the image's lock (<root>/locks/image.NAME.lock),
 * so concurrent commands wait for each other and a crash leaves nothing
 * half-made. Build inputs (.debs, the extracted kernel) live in the cache:
 * $NESTVIRT_CACHE, else <root>/cache.
 */
import { chmod, mkdir, mkdtemp, readdir, rename, rm, writeFile } from 'node:fs/promises';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { NestvirtError, NotPossibleError, UsageError } from '../errors.js';
import { Dirs, Files } from '../state/paths.js';
import { checkName, readJson, writeJson } from '../state/store.js';
import { withLock } from '../state/lock.js';
import type { Runner } from '../util/exec.js';
import type { Progress } from '../cli/output.js';
import type { ImageSpec } from './types.js';
import {
  BUILTINS,
  changedInputs,
  inputsHash,
  isBuiltin,
  RECIPE_VERSION,
  type BuiltinName,
} from './recipe.js';
import {
  buildHypervisor,
  buildTiny,
  builtinInputs,
  nestvirtBuildId,
  ImageFiles,
  type BuildContext,
  type Step,
} from './build.js';

export interface StoreOptions {
  /** State root (NESTVIRT_HOME). */
  root: string;
  run: Runner;
  env?: NodeJS.ProcessEnv;
  /** Live task list for long work (build steps, downloads). */
  progress?: Progress;
  /** Receives one-line notes (why a rebuild happens). */
  note?: (line: string) => void;
}

/** How long a command waits for another one building or importing the same image. */
export const IMAGE_LOCK_WAIT_MS = 30 * 60_000;

/** Where .debs and the extracted kernel are cached. */
export function cacheDir(root: string, env: NodeJS.ProcessEnv = process.env): string {
  return env.NESTVIRT_CACHE || join(root, Dirs.cache);
}

export function imageDir(root: string, name: string): string {
  return join(root, Dirs.images, name);
}

/** The lock guarding one image (builds, imports, removal). */
export function imageLockPath(root: string, name: string): string {
  return join(root, Dirs.locks, `image.${name}.lock`);
}

/** Runs fn holding the image's lock (waits for a build in progress). */
export function withImageLock<T>(
  root: string,
  name: string,
  fn: () => Promise<T>,
  waitMs = IMAGE_LOCK_WAIT_MS,
): Promise<T> {
  return withLock(imageLockPath(root, name), `image ${name}`, fn, { waitMs });
}

/** Reads an image's spec; undefined when it is not there (or not complete). */
export async function readImage(root: string, name: string): Promise<ImageSpec | undefined> {
  return readJson<ImageSpec>(join(imageDir(root, name), Files.spec));
}

function stepper(progress: Progress | undefined): Step {
  return (title, fn) => (progress ? progress.step(title, fn) : fn(() => {}));
}

function filesPresent(spec: ImageSpec): boolean {
  return [spec.kernel, spec.initrd, spec.disk].every((p) => !p || existsSync(p));
}

const STAMP_FILE = '.inputs-stamp';

/**
 * A cheap fingerprint of what could change a built-in's inputs: apt's and
 * dpkg's databases (their mtimes), the recipe, and for `hypervisor` this
 * nestvirt build. Equal stamp => the inputs are unchanged, no apt queries.
 */
async function inputsStamp(name: BuiltinName, root: string): Promise<string> {
  const parts: string[] = [`r${RECIPE_VERSION}`];
  for (const f of ['/var/lib/dpkg/status', '/var/cache/apt/pkgcache.bin', '/var/lib/apt/lists']) {
    try {
      parts.push(String(statSync(f).mtimeMs));
    } catch {
      parts.push('-');
    }
  }
  if (name === 'hypervisor') {
    parts.push(process.version, await nestvirtBuildId());
    parts.push((await readImage(root, 'tiny'))?.inputsHash ?? '-');
  }
  return parts.join(' ');
}

export interface GetImageOptions extends StoreOptions {
  name: string;
  /** Rebuild a built-in even when its inputs are unchanged. */
  rebuild?: boolean;
}

/**
 * Returns the image, building a built-in one when it is missing or its
 * inputs changed. Unknown names fail with a UsageError naming the fix.
 */
export async function getImage(opts: GetImageOptions): Promise<ImageSpec> {
  const { root, name } = opts;
  checkName('image', name);
  if (!isBuiltin(name)) {
    const spec = await readImage(root, name);
    if (!spec)
      throw new UsageError(
        'image.not-found',
        `no image named ${JSON.stringify(name)}`,
        `built-in images: ${BUILTINS.join(', ')}; import a disk with \`nestvirt image import ${name} FILE|URL\`; list images with \`nestvirt image ls\``,
      );
    if (!filesPresent(spec))
      throw new NotPossibleError(
        'image.corrupt',
        `image ${name} is missing its files (${imageDir(root, name)})`,
        `remove it with \`nestvirt image rm ${name}\` and import it again`,
      );
    return spec;
  }
  if (!opts.rebuild) {
    const spec = await readImage(root, name);
    if (spec && filesPresent(spec)) {
      let stored = '';
      try {
        stored = readFileSync(join(imageDir(root, name), STAMP_FILE), 'utf8');
      } catch {
        /* no stamp: check the inputs */
      }
      if (stored && stored === (await inputsStamp(name, root).catch(() => ''))) return spec;
    }
  }
  return withImageLock(root, name, async () => {
    const spec = await readImage(root, name);
    const cache = cacheDir(root, opts.env);
    let computed;
    try {
      const tinyHash =
        name === 'hypervisor'
          ? (await getImage({ ...opts, name: 'tiny', rebuild: false })).inputsHash
          : undefined;
      computed = await builtinInputs(name, {
        run: opts.run,
        cacheDir: cache,
        ...(tinyHash ? { tinyHash } : {}),
      });
    } catch (e) {
      // Inside a guest with no apt (a pre-seeded image), keep what is there.
      if (spec && filesPresent(spec)) return spec;
      throw e;
    }
    const hash = inputsHash(computed.inputs);
    if (spec && !opts.rebuild && spec.inputsHash === hash && filesPresent(spec)) {
      await writeFile(join(imageDir(root, name), STAMP_FILE), await inputsStamp(name, root)).catch(
        () => undefined,
      );
      return spec;
    }
    if (spec && !opts.rebuild) {
      const why = changedInputs(spec.inputs, computed.inputs);
      opts.note?.(`rebuilding ${name}: changed ${why.join(', ') || 'recipe'}`);
    }
    const step = stepper(opts.progress);
    const ctx: BuildContext = {
      run: opts.run,
      env: opts.env ?? process.env,
      cacheDir: cache,
      step,
      tiny: () => getImage({ ...opts, name: 'tiny', rebuild: false }),
    };
    // VMs made from an older hypervisor build have overlays backed by its root disk: keep it.
    const users = await vmsUsingImage(root, name);
    const keep = users.length
      ? (f: string): boolean => f.startsWith(ImageFiles.rootDiskPrefix)
      : undefined;
    return install(
      root,
      name,
      async (dir, finalDir) => {
        const built =
          name === 'tiny'
            ? await buildTiny(ctx, dir, finalDir, computed.inputs, computed.kernel)
            : await buildHypervisor(ctx, dir, finalDir, computed.inputs, computed.kernel);
        await writeFile(join(dir, STAMP_FILE), await inputsStamp(name, root));
        return built;
      },
      keep ? { keep } : {},
    );
  });
}

/**
 * Makes an image atomically: `make` fills a fresh temp directory and returns
 * the spec (paths under the final directory); the spec is written and the
 * directory renamed into place, replacing an older version. Any failure
 * removes the temp directory. Call with the image's lock held.
 */
export async function install(
  root: string,
  name: string,
  make: (dir: string, finalDir: string) => Promise<ImageSpec>,
  opts: { keep?: (file: string) => boolean } = {},
): Promise<ImageSpec> {
  const base = join(root, Dirs.images);
  await mkdir(base, { recursive: true });
  // Left-overs of a crashed build of this image (we hold its lock, so they are stale).
  for (const f of await readdir(base))
    if (f.startsWith(`.${name}.build-`) || f.startsWith(`.${name}.old-`))
      await rm(join(base, f), { recursive: true, force: true });
  const finalDir = imageDir(root, name);
  const tmp = await mkdtemp(join(base, `.${name}.build-`));
  try {
    await chmod(tmp, 0o755); // QEMU may run as another user (libvirt): the files must be readable.
    const spec = await make(tmp, finalDir);
    await writeJson(join(tmp, Files.spec), spec);
    if (existsSync(finalDir)) {
      // Files of the old version still needed (a VM overlay's backing disk) move over.
      if (opts.keep)
        for (const f of await readdir(finalDir))
          if (opts.keep(f) && !existsSync(join(tmp, f)))
            await rename(join(finalDir, f), join(tmp, f));
      const old = await mkdtemp(join(base, `.${name}.old-`));
      await rename(finalDir, join(old, 'x'));
      try {
        await rename(tmp, finalDir);
      } catch (e) {
        await rename(join(old, 'x'), finalDir);
        throw e;
      }
      await rm(old, { recursive: true, force: true });
    } else await rename(tmp, finalDir);
    return spec;
  } catch (e) {
    await rm(tmp, { recursive: true, force: true });
    throw e;
  }
}

/** Every image present in the store (built or imported), sorted by name. */
export async function listImages(root: string): Promise<ImageSpec[]> {
  let names: string[];
  try {
    names = await readdir(join(root, Dirs.images));
  } catch {
    return [];
  }
  const out: ImageSpec[] = [];
  for (const n of names.sort()) {
    if (n.startsWith('.')) continue;
    const s = await readImage(root, n).catch(() => undefined);
    if (s) out.push(s);
  }
  return out;
}

/** Names of the VMs whose spec names this image (<root>/vms/NAME/spec.json `image`). */
export async function vmsUsingImage(root: string, name: string): Promise<string[]> {
  let vms: string[];
  try {
    vms = await readdir(join(root, Dirs.vms));
  } catch {
    return [];
  }
  const users: string[] = [];
  for (const vm of vms.sort()) {
    if (vm.startsWith('.')) continue;
    const spec = await readJson<{ image?: unknown }>(join(root, Dirs.vms, vm, Files.spec)).catch(
      () => undefined,
    );
    if (spec && spec.image === name) users.push(vm);
  }
  return users;
}

/** Removes an image; refuses while a VM uses it (names the VMs). */
export async function removeImage(root: string, name: string): Promise<void> {
  checkName('image', name);
  await withImageLock(
    root,
    name,
    async () => {
      const dir = imageDir(root, name);
      if (!existsSync(dir))
        throw new UsageError(
          'image.not-found',
          `no image named ${JSON.stringify(name)}`,
          'list images with `nestvirt image ls`',
        );
      const users = await vmsUsingImage(root, name);
      if (users.length)
        throw new NestvirtError(
          'image.in-use',
          `image ${name} is used by VM${users.length > 1 ? 's' : ''} ${users.join(', ')}`,
          {
            hint: `remove ${users.length > 1 ? 'them' : 'it'} first: nestvirt rm ${users.join(' ')}`,
            exitCode: 1,
          },
        );
      // Rename first so a crash mid-delete never leaves a half image under the real name.
      const base = join(root, Dirs.images);
      const trash = await mkdtemp(join(base, `.${name}.old-`));
      await rename(dir, join(trash, 'x'));
      await rm(trash, { recursive: true, force: true });
    },
    10_000,
  );
}

export { ImageFiles };
