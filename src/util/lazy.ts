/**
 * Modules loaded on first use instead of at start-up. Start-up is most of
 * what a short command costs (docs/performance.md): node:crypto pulls in ~15
 * internal modules and node:child_process the stream and socket machinery,
 * which read-only commands such as `ls` never need; yaml is ~70 files that
 * only cloud-init uses.
 *
 * Through require(), never import(): the bundled CLI is compiled with
 * vm.Script (scripts/cli-loader.cjs), where import() has no loader.
 *
 *   import { crypto } from '../util/lazy.js';
 *   crypto().createHash('sha256')
 */
import { createRequire } from 'node:module';

const load = createRequire(import.meta.url);

function lazy<T>(id: string): () => T {
  let mod: T | undefined;
  return () => (mod ??= load(id) as T);
}

export const crypto = lazy<typeof import('node:crypto')>('node:crypto');
export const childProcess = lazy<typeof import('node:child_process')>('node:child_process');
export const yaml = lazy<typeof import('yaml')>('yaml');
/** The Google client libraries (only `nestvirt gcp` uses them). */
export const googleAuth = lazy<typeof import('google-auth-library')>('google-auth-library');
export const googleCompute = lazy<typeof import('@googleapis/compute')>('@googleapis/compute');
export const googleOrgPolicy = lazy<typeof import('@google-cloud/org-policy')>(
  '@google-cloud/org-policy',
);
