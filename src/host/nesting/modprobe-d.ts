/**
 * modprobe.d: nestvirt's own file, and the user's options it must not touch.
 * modprobe reads /etc/modprobe.d, /run/modprobe.d, /usr/local/lib/modprobe.d,
 * /lib/modprobe.d and /usr/lib/modprobe.d (man modprobe.d(5)); a file name
 * in an earlier directory hides the same name in a later one, and the files
 * are then read in file-name order, so for the same parameter the option
 * read last wins.
 */
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { koName, readRootFile } from './facts.js';

/** nestvirt's own modprobe.d file (absolute host path). */
export const NESTVIRT_CONF = '/etc/modprobe.d/nestvirt-nested.conf';

export const MODPROBE_D_DIRS = [
  '/etc/modprobe.d',
  '/run/modprobe.d',
  '/usr/local/lib/modprobe.d',
  '/lib/modprobe.d',
  '/usr/lib/modprobe.d',
];

/** The content nestvirt writes: a header saying who wrote it, then one options line. */
export function confContent(module: string, value: 0 | 1): string {
  return [
    '# Written by nestvirt (`nestvirt enable --persist`): KVM nesting for this machine.',
    '# Remove it with `nestvirt disable` (or delete this file; it applies at the next module load).',
    `options ${module} nested=${value}`,
    '',
  ].join('\n');
}

/** Another file's option for the same module's `nested` parameter. */
export interface ConfOption {
  /** Absolute host path. */
  file: string;
  line: number;
  text: string;
  /** The value it sets, as written. */
  value: string;
}

/** Finds `options <module> ... nested=...` in every modprobe.d file but nestvirt's own. */
export async function findNestedOptions(root: string, module: string): Promise<ConfOption[]> {
  const seen = new Set<string>();
  const out: ConfOption[] = [];
  const names = new Set([module, koName(module)]);
  for (const dir of MODPROBE_D_DIRS) {
    let files: string[];
    try {
      files = (await readdir(join(root, dir))).filter((f) => f.endsWith('.conf')).sort();
    } catch {
      continue;
    }
    for (const f of files) {
      if (seen.has(f)) continue; // hidden by the same name in an earlier directory
      seen.add(f);
      const path = `${dir}/${f}`;
      if (path === NESTVIRT_CONF) continue;
      const text = await readRootFile(root, path);
      if (text === undefined) continue;
      text.split('\n').forEach((raw, i) => {
        const l = raw.replace(/#.*/, '').trim();
        const words = l.split(/\s+/);
        if (words[0] !== 'options' || !names.has(words[1] ?? '')) return;
        for (const w of words.slice(2)) {
          const m = /^nested=(.*)$/.exec(w);
          if (m) out.push({ file: path, line: i + 1, text: raw.trim(), value: m[1]! });
        }
      });
    }
  }
  return out.sort((a, b) => (basename(a.file) < basename(b.file) ? -1 : 1));
}

function basename(p: string): string {
  return p.slice(p.lastIndexOf('/') + 1);
}
