/**
 * Reading the host through a root directory, so a fixture tree (or an
 * unpacked `doctor --capture` tarball) stands in for a machine. Every path is
 * relative to the root (`proc/cpuinfo`, never `/proc/cpuinfo`).
 */
import { readFileSync, readdirSync, statSync, existsSync } from 'node:fs';
import { join } from 'node:path';

export class HostRoot {
  /** The directory the host is read from; '/' for this machine. */
  readonly dir: string;
  /** Relative paths that were read successfully (for --capture). */
  readonly used = new Set<string>();
  constructor(dir = '/') {
    this.dir = dir;
  }
  /** True when reading this machine, not a captured tree. */
  get live(): boolean {
    return this.dir === '/';
  }
  path(rel: string): string {
    return join(this.dir, rel);
  }
  /** File text, or undefined when absent or unreadable. */
  text(rel: string): string | undefined {
    try {
      const t = readFileSync(this.path(rel), 'utf8');
      this.used.add(rel);
      return t;
    } catch {
      return undefined;
    }
  }
  /** First line of a file, trimmed; undefined when absent or empty. */
  line(rel: string): string | undefined {
    const t = this.text(rel);
    if (t === undefined) return undefined;
    const l = t.split('\n')[0]!.replace(/\0+$/, '').trim();
    return l === '' ? undefined : l;
  }
  /** File bytes, or undefined. */
  bytes(rel: string): Buffer | undefined {
    try {
      const b = readFileSync(this.path(rel));
      this.used.add(rel);
      return b;
    } catch {
      return undefined;
    }
  }
  exists(rel: string): boolean {
    return existsSync(this.path(rel));
  }
  isDir(rel: string): boolean {
    try {
      return statSync(this.path(rel)).isDirectory();
    } catch {
      return false;
    }
  }
  /** Directory entries (sorted), or [] when absent. */
  list(rel: string): string[] {
    try {
      return readdirSync(this.path(rel)).sort();
    } catch {
      return [];
    }
  }
}
