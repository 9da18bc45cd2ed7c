/**
 * The seam to the image store (src/image/store.ts, owned by the image
 * layer): `getImage` resolves a name to an ImageSpec, building a built-in
 * image when needed.
 */
import type { ImageLookup } from './lifecycle.js';

export const imageLookup: ImageLookup | undefined = undefined;
