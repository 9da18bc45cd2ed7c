/** The nestvirt version, read from package.json at build time of the module graph. */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

/** The project's root folder (holds package.json), from dist/src or src. */
export const PROJECT_ROOT = (() => {
  let d = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 5; i++) {
    try {
      readFileSync(join(d, 'package.json'));
      return d;
    } catch {
      d = dirname(d);
    }
  }
  return d;
})();

export const VERSION: string = (
  JSON.parse(readFileSync(join(PROJECT_ROOT, 'package.json'), 'utf8')) as { version: string }
).version;

/** bin/nestvirt of this build (the demo runs it as a child). */
export const BIN_PATH = join(PROJECT_ROOT, 'bin', 'nestvirt');
