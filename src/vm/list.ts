/**
 * `ls`: every VM under the root, each reconciled with what really runs.
 * Reads are done concurrently; a VM dir without spec.json is being created
 * (or removed) and is not listed; one whose spec is unreadable is reported
 * in `errors` instead of failing the whole list.
 */
import { NestvirtError } from '../errors.js';
import { reconcile, vmInfo, vmNames, vmPaths } from './state.js';
import type { VmInfo } from './types.js';
import { vmAddresses } from '../net/vm-hooks.js';

export interface VmList {
  vms: VmInfo[];
  errors: { name: string; code: string; message: string; hint?: string }[];
}

export async function listVms(root: string): Promise<VmList> {
  const names = await vmNames(root);
  const out: VmList = { vms: [], errors: [] };
  const results = await Promise.all(
    names.map(async (name) => {
      const p = vmPaths(root, name);
      try {
        return {
          ...vmInfo(p, await reconcile(p, { write: 'try' })),
          addresses: await vmAddresses(root, name),
        };
      } catch (e) {
        if (e instanceof NestvirtError && e.code === 'vm.not-found') return undefined;
        const err =
          e instanceof NestvirtError
            ? e
            : new NestvirtError('internal', String((e as Error)?.message ?? e));
        return { name, ...err.toJSON() };
      }
    }),
  );
  for (const r of results) {
    if (!r) continue;
    if ('status' in r) out.vms.push(r);
    else out.errors.push(r as VmList['errors'][number]);
  }
  return out;
}
