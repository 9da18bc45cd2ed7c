/**
 * The libvirt layer's public face: `libvirtSummary` for `nestvirt doctor`,
 * and re-exports for the CLI.
 */
import { which, run as defaultRun, type Runner } from '../util/exec.js';
import { NestvirtError } from '../errors.js';
import { listDomains, type LibvirtSummary } from './domains.js';
import { resolveUri, Virsh } from './virsh.js';

export type { LibvirtSummary } from './domains.js';
export { listDomains, nestDomain, unnestDomain, powerCycle } from './domains.js';
export { nestXml } from './edit.js';
export { Virsh, resolveUri } from './virsh.js';

/**
 * The libvirt summary `nestvirt doctor` includes: whether libvirt is here
 * (virsh installed), whether its daemon answers at the URI, and each
 * domain's nesting verdict. Never throws: problems become `error`.
 */
export async function libvirtSummary(
  opts: { uri?: string; env?: NodeJS.ProcessEnv; run?: Runner; root?: string } = {},
): Promise<LibvirtSummary> {
  const env = opts.env ?? process.env;
  const uri = resolveUri(opts.uri, env);
  if (!(await which('virsh', env))) return { present: false, uri, reachable: false, domains: [] };
  const virsh = new Virsh(opts.run ?? defaultRun, uri, env);
  try {
    const report = await listDomains(virsh, { root: opts.root ?? '/' });
    return {
      present: true,
      uri,
      reachable: true,
      domains: report.domains.map((d) => ({
        name: d.name,
        canNest: d.canNest,
        needsPowerCycle: d.needsPowerCycle,
        reason: d.reason,
      })),
    };
  } catch (e) {
    const msg = e instanceof NestvirtError ? e.message : String((e as Error)?.message ?? e);
    const fix = e instanceof NestvirtError ? e.hint : undefined;
    return {
      present: true,
      uri,
      reachable: false,
      error: msg,
      ...(fix ? { fix } : {}),
      domains: [],
    };
  }
}
