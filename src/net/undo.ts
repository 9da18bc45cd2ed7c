/**
 * Undoing recorded host changes exactly. The ledger (src/state/ledger.ts)
 * holds, per owner (`net:NAME`, `tap:VM`, `expose:VM:PORT/proto`), the
 * changes in the order made; `release` undoes them in reverse and keeps in
 * the ledger whatever could not be undone, so nothing is silently lost.
 */
import { listEntries, readEntry, recordChanges, writeEntry, type Change } from '../state/ledger.js';
import { deleteArgv, checkArgv, type IptRule } from './iptables.js';
import { deleteChains } from './nft.js';
import {
  linkExists,
  nftChains,
  nftDropEmptyTable,
  nftApply,
  processIs,
  readSysctl,
  type NetCtx,
} from './host.js';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';

/** Undoes one change. Absent things count as undone; a failure throws. */
export async function undoChange(ctx: NetCtx, c: Change, owner: string): Promise<void> {
  switch (c.kind) {
    case 'link': {
      if (await linkExists(ctx, c.name as string))
        await ctx.run(['ip', 'link', 'del', 'dev', c.name as string]);
      return;
    }
    case 'addr': {
      await ctx.run(['ip', 'addr', 'del', c.addr as string, 'dev', c.dev as string], {
        check: false,
      });
      return;
    }
    case 'nft-chains': {
      const have = new Set(await nftChains(ctx));
      const mine = (c.chains as string[]).filter((x) => have.has(x));
      if (mine.length) await nftApply(ctx, deleteChains(mine));
      await nftDropEmptyTable(ctx);
      return;
    }
    case 'iptables': {
      const rule = c.rule as IptRule;
      const bin = c.bin as string;
      // -D removes one copy; loop in case it was inserted twice.
      for (let i = 0; i < 8; i++) {
        const chk = await ctx.run(checkArgv(bin, rule), { check: false });
        if (chk.code !== 0) break;
        await ctx.run(deleteArgv(bin, rule));
      }
      return;
    }
    case 'process': {
      const pid = c.pid as number;
      if (await processIs(ctx, pid, c.comm as string)) {
        process.kill(pid, 'SIGTERM');
        for (let i = 0; i < 100 && (await processIs(ctx, pid, c.comm as string)); i++)
          await new Promise((r) => setTimeout(r, 20));
        if (await processIs(ctx, pid, c.comm as string)) process.kill(pid, 'SIGKILL');
      }
      return;
    }
    case 'sysctl': {
      // ip_forward is shared by every network and exposure: hand the record
      // over to another live owner instead of turning forwarding off under it.
      const heir = (await listEntries(ctx.root)).find(
        (e) => e.owner !== owner && /^(net|expose):/.test(e.owner) && e.changes.length > 0,
      );
      if (heir) {
        await recordChanges(ctx.root, heir.owner, [c]);
        return;
      }
      const cur = await readSysctl(ctx, c.key as string);
      if (cur === c.value && c.prev !== null)
        await writeFile(
          join(ctx.proc ?? '/proc', 'sys', ...(c.key as string).split('.')),
          `${c.prev as string}\n`,
        );
      return;
    }
    default:
      throw new Error(`unknown ledger change kind ${JSON.stringify(c.kind)}`);
  }
}

/** Undoes changes in reverse (best effort); returns the ones that failed, in their original order. */
export async function undoAll(
  ctx: NetCtx,
  changes: Change[],
  owner: string,
): Promise<{ failed: Change[]; errors: string[] }> {
  const failed: Change[] = [];
  const errors: string[] = [];
  for (const c of [...changes].reverse()) {
    try {
      await undoChange(ctx, c, owner);
    } catch (e) {
      failed.unshift(c);
      errors.push(e instanceof Error ? e.message : String(e));
    }
  }
  return { failed, errors };
}

/** Undoes everything recorded for `owner`; what failed stays recorded. Returns the errors. */
export async function release(ctx: NetCtx, owner: string): Promise<string[]> {
  const entry = await readEntry(ctx.root, owner);
  if (!entry) return [];
  const { failed, errors } = await undoAll(ctx, entry.changes, owner);
  await writeEntry(ctx.root, { ...entry, changes: failed, at: new Date().toISOString() });
  return errors;
}
