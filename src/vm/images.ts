/**
 * The seam to the image store (src/image/store.ts, owned by the image
 * layer): `getImage` resolves a name to an ImageSpec, building a built-in
 * image (with its own progress steps) when needed. The store (and its build
 * code) is loaded only when an image is looked up, so commands that do not
 * need it (ls, info, exec, ...) start faster.
 */
import type { ImageLookup } from './lifecycle.js';

export const imageLookup: ImageLookup = async (o) =>
  (await import('../image/store.js')).getImage(o);
