/**
 * Filling a guest tree on disk: busybox and its applet links, dynamic
 * programs with their shared libraries (found with ldd), kernel modules
 * (indexed with depmod), and the rendered guest files.
 */
import {
  chmod,
  copyFile,
  cp,
  lstat,
  mkdir,
  readFile,
  readdir,
  readlink,
  rm,
  stat,
  symlink,
  writeFile,
} from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Runner } from '../util/exec.js';
import { which } from '../util/exec.js';
import { NotPossibleError } from '../errors.js';
import { SKELETON_DIRS, SKELETON_LINKS, type GuestFile } from './guest.js';
import { parseLdd } from './recipe.js';
import type { KernelBundle } from './kernel.js';

/** Creates the merged-/usr skeleton of a guest tree. */
export async function skeleton(stage: string): Promise<void> {
  for (const d of SKELETON_DIRS) await mkdir(join(stage, d), { recursive: true });
  for (const [link, target] of SKELETON_LINKS) await symlink(target, join(stage, link));
}

/** Resolves a program on PATH (plus the sbin folders, which a non-root PATH may lack). */
export async function findProgram(
  name: string,
  env: NodeJS.ProcessEnv = process.env,
): Promise<string> {
  const path = [
    env.PATH ?? '',
    '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
  ].join(':');
  const p = await which(name, { ...env, PATH: path });
  if (!p)
    throw new NotPossibleError(
      'image.missing-program',
      `${name} is needed to build the image but is not installed`,
      'run scripts/setup.sh (it installs the Debian packages nestvirt uses)',
    );
  return p;
}

/** Copies a file into the tree at the same path, following links (mode kept). */
export async function copyIn(stage: string, src: string, dest = src): Promise<void> {
  const to = join(stage, dest);
  await mkdir(dirname(to), { recursive: true });
  await copyFile(src, to);
  await chmod(to, (await stat(src)).mode & 0o7777);
}

/** Copies a program and every shared library it links (ldd) into the tree. */
export async function copyProgram(
  run: Runner,
  stage: string,
  program: string,
  dest = program,
): Promise<void> {
  await copyIn(stage, program, dest);
  await copyLibs(run, stage, program);
}

/** The shared libraries of an ELF file, as ldd resolves them ([] for a static one). */
export async function sharedLibs(run: Runner, file: string): Promise<string[]> {
  const r = await run(['ldd', file], { check: false });
  return r.code === 0 ? parseLdd(r.stdout) : []; // non-zero: "not a dynamic executable"
}

/** Copies the shared libraries of an ELF file (nothing for a static one). */
export async function copyLibs(run: Runner, stage: string, file: string): Promise<void> {
  for (const lib of await sharedLibs(run, file)) {
    try {
      await lstat(join(stage, lib));
      continue;
    } catch {
      /* not there yet */
    }
    await copyIn(stage, lib);
  }
}

/** Installs busybox as /bin/busybox with a link for every applet (at its canonical path). */
export async function installBusybox(run: Runner, stage: string): Promise<void> {
  const bb = await findProgram('busybox');
  await copyIn(stage, bb, 'usr/bin/busybox');
  const r = await run([bb, '--list-full']);
  for (const p of r.stdout
    .split('\n')
    .map((s) => s.trim())
    .filter(Boolean)) {
    if (p.endsWith('/busybox')) continue;
    // --list-full names bin/, sbin/, usr/bin/, usr/sbin/: all land in usr/ via the skeleton links.
    const dest = join(stage, p.replace(/^(s?bin)\//, 'usr/$1/'));
    await mkdir(dirname(dest), { recursive: true });
    await symlink('/usr/bin/busybox', dest).catch((e: NodeJS.ErrnoException) => {
      if (e.code !== 'EEXIST') throw e;
    });
  }
}

/** Copies the given module files from the kernel bundle and indexes them with depmod. */
export async function installModules(
  run: Runner,
  stage: string,
  kernel: KernelBundle,
  files: readonly string[],
): Promise<void> {
  const dest = join(stage, 'usr/lib/modules', kernel.release);
  for (const f of files) {
    await mkdir(dirname(join(dest, f)), { recursive: true });
    await copyFile(join(kernel.modulesDir, f), join(dest, f));
  }
  for (const f of ['modules.order', 'modules.builtin', 'modules.builtin.modinfo'])
    await copyFile(join(kernel.modulesDir, f), join(dest, f));
  await run([await findProgram('depmod'), '-b', stage, kernel.release]);
}

/** Writes rendered guest files (replacing applet links of the same name). */
export async function writeGuestFiles(stage: string, files: readonly GuestFile[]): Promise<void> {
  for (const f of files) {
    const p = join(stage, f.path);
    await mkdir(dirname(p), { recursive: true });
    await rm(p, { force: true });
    if (f.symlink) await symlink(f.content, p);
    else {
      await writeFile(p, f.content, { mode: f.mode });
      await chmod(p, f.mode);
    }
  }
}

/** Copies a directory tree (symlinks kept as links). */
export async function copyTree(src: string, dest: string): Promise<void> {
  await mkdir(dirname(dest), { recursive: true });
  await cp(src, dest, { recursive: true, verbatimSymlinks: true, dereference: false });
}

/** Total size in bytes of a tree (regular files only). */
export async function treeSize(dir: string): Promise<number> {
  let total = 0;
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) total += await treeSize(p);
    else if (e.isFile()) total += (await stat(p)).size;
  }
  return total;
}

export { readFile, readlink };
