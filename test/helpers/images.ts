/**
 * Built-in images for integration tests, built once and shared by every test
 * file of a run (and by later runs while their inputs are unchanged).
 *
 *   const { spec, home } = await testImage('tiny');
 *   // spec.kernel, spec.initrd, spec.cmdline, spec.readyMarker, ...
 *   const myHome = await tempHome();
 *   await seedImage(myHome, 'tiny');     // <myHome>/images/tiny, hard-linked
 *   // now `nestvirt run tiny` with NESTVIRT_HOME=myHome finds it, no rebuild
 *
 * The shared home is $NESTVIRT_TEST_IMAGES, else $TMPDIR/nestvirt-test-images;
 * the .deb cache is $NESTVIRT_CACHE, else <shared home>/cache. Concurrent
 * test files (separate processes) are safe: the image's lock makes the
 * second one wait for the first one's build, then reuse it.
 */
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { copyFile, link, mkdir, rm, writeFile } from 'node:fs/promises';
import { run } from '../../src/util/exec.js';
import { getImage, imageDir } from '../../src/image/store.js';
import type { ImageSpec } from '../../src/image/types.js';
import type { BuiltinName } from '../../src/image/recipe.js';
import { Files } from '../../src/state/paths.js';

/** The shared NESTVIRT_HOME holding the test images. */
export const TEST_IMAGES_HOME =
  process.env.NESTVIRT_TEST_IMAGES || join(tmpdir(), 'nestvirt-test-images');
/** The shared build-input cache (the kernel .deb, the extracted kernel). */
export const TEST_CACHE = process.env.NESTVIRT_CACHE || join(TEST_IMAGES_HOME, 'cache');

export interface TestImage {
  spec: ImageSpec;
  /** The shared NESTVIRT_HOME the image lives in. */
  home: string;
  /** The shared cache directory (pass as NESTVIRT_CACHE to subprocesses). */
  cache: string;
}

const memo = new Map<string, Promise<TestImage>>();

/** Builds (when needed) and returns a built-in image from the shared test home. */
export function testImage(name: BuiltinName): Promise<TestImage> {
  let p = memo.get(name);
  if (!p) {
    p = getImage({
      root: TEST_IMAGES_HOME,
      name,
      run,
      env: { ...process.env, NESTVIRT_CACHE: TEST_CACHE },
    }).then((spec) => ({ spec, home: TEST_IMAGES_HOME, cache: TEST_CACHE }));
    p.catch(() => memo.delete(name));
    memo.set(name, p);
  }
  return p;
}

/**
 * Puts a built-in image into another NESTVIRT_HOME (files hard-linked when
 * possible, spec paths rewritten), so commands run with that home use it
 * without building. Returns the seeded spec.
 */
export async function seedImage(home: string, name: BuiltinName): Promise<ImageSpec> {
  // The hypervisor's inputs include tiny's: seed tiny too, or the home would rebuild.
  if (name === 'hypervisor') await seedImage(home, 'tiny');
  const { spec } = await testImage(name);
  const src = imageDir(TEST_IMAGES_HOME, name);
  const dest = imageDir(home, name);
  await rm(dest, { recursive: true, force: true });
  await mkdir(dest, { recursive: true });
  const re = (p: string | undefined): string | undefined => (p ? p.replace(src, dest) : p);
  for (const p of [spec.kernel, spec.initrd, spec.disk]) {
    if (!p) continue;
    const to = re(p)!;
    await link(p, to).catch(() => copyFile(p, to));
  }
  const seeded: ImageSpec = { ...spec };
  if (spec.kernel) seeded.kernel = re(spec.kernel)!;
  if (spec.initrd) seeded.initrd = re(spec.initrd)!;
  if (spec.disk) seeded.disk = re(spec.disk)!;
  await writeFile(join(dest, Files.spec), JSON.stringify(seeded, null, 2) + '\n');
  // Same inputs as the shared build: copy its stamp so the fast path applies.
  await copyFile(join(src, '.inputs-stamp'), join(dest, '.inputs-stamp')).catch(() => undefined);
  return seeded;
}
