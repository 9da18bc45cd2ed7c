/**
 * The host-change ledger: every change nestvirt makes to the host
 * (modprobe.d files, links, firewall tables, libvirt domain XML) is
 * recorded here, as data, with what is needed to undo it exactly, so that
 * a later command (disable, net rm, unnest) can revert it from another
 * process. One JSON file per owner under <root>/ledger/.
 */
import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { Dirs } from './paths.js';
import { readJson, writeJson } from './store.js';
import { withLock } from './lock.js';

/** One recorded change; `kind` selects the undo, the rest is its data. */
export interface Change {
  kind: string;
  [key: string]: unknown;
}

export interface LedgerEntry {
  /** Who owns these changes, e.g. `nesting`, `net:default`, `expose:web:8000`. */
  owner: string;
  at: string;
  /** Changes in the order applied; undo runs them in reverse. */
  changes: Change[];
}

function fileFor(root: string, owner: string): string {
  return join(root, Dirs.ledger, encodeURIComponent(owner) + '.json');
}

export async function readEntry(root: string, owner: string): Promise<LedgerEntry | undefined> {
  return readJson<LedgerEntry>(fileFor(root, owner));
}

/** Appends changes to an owner's entry (created when absent). */
export async function recordChanges(root: string, owner: string, changes: Change[]): Promise<void> {
  const lockPath = join(root, Dirs.locks, 'ledger.lock');
  await withLock(
    lockPath,
    'the host-change ledger',
    async () => {
      const cur = (await readEntry(root, owner)) ?? {
        owner,
        at: new Date().toISOString(),
        changes: [],
      };
      cur.changes.push(...changes);
      cur.at = new Date().toISOString();
      await writeJson(fileFor(root, owner), cur);
    },
    { waitMs: 10_000 },
  );
}

/** Replaces an owner's entry (used after a partial undo). */
export async function writeEntry(root: string, entry: LedgerEntry): Promise<void> {
  if (entry.changes.length === 0) await rm(fileFor(root, entry.owner), { force: true });
  else await writeJson(fileFor(root, entry.owner), entry);
}

export async function removeEntry(root: string, owner: string): Promise<void> {
  await rm(fileFor(root, owner), { force: true });
}

export async function listEntries(root: string): Promise<LedgerEntry[]> {
  let names: string[];
  try {
    names = await readdir(join(root, Dirs.ledger));
  } catch {
    return [];
  }
  const out: LedgerEntry[] = [];
  for (const n of names.filter((n) => n.endsWith('.json')).sort()) {
    const e = await readJson<LedgerEntry>(join(root, Dirs.ledger, n));
    if (e) out.push(e);
  }
  return out;
}
