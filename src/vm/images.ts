/**
 * The seam to the image store (src/image/store.ts, owned by the image
 * layer): `getImage` resolves a name to an ImageSpec, building a built-in
 * image (with its own progress steps) when needed.
 */
import { getImage } from '../image/store.js';
import type { ImageLookup } from './lifecycle.js';

export const imageLookup: ImageLookup = (o) => getImage(o);
