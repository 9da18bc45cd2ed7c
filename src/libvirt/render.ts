/**
 * The libvirt part of `nestvirt doctor`'s human report.
 */
import { paint, type Output } from '../cli/output.js';
import type { LibvirtSummary } from './domains.js';

/** Renders a LibvirtSummary as a doctor section ('' when libvirt is absent). */
export function renderLibvirtSummary(s: LibvirtSummary, o: Output): string {
  if (!s.present) return '';
  const L = [paint(o, 'bold', 'libvirt')];
  if (!s.reachable) {
    L.push(`  ${paint(o, 'yellow', 'unreachable')} ${s.error ?? `no answer at ${s.uri}`}`);
    if (s.fix) L.push(`    ${paint(o, 'yellow', 'fix:')} ${s.fix}`);
    return L.join('\n') + '\n';
  }
  if (s.domains.length === 0) L.push(`  ${s.uri}: no domains`);
  const w = Math.max(0, ...s.domains.map((d) => d.name.length));
  for (const d of s.domains) {
    const mark = d.canNest
      ? paint(o, 'green', 'nests')
      : d.needsPowerCycle
        ? paint(o, 'yellow', 'power-cycle')
        : paint(o, 'red', 'no');
    L.push(`  ${d.name.padEnd(w)}  ${mark}  ${d.reason}`);
  }
  if (s.domains.some((d) => !d.canNest))
    L.push(
      `  ${paint(o, 'yellow', 'fix:')} \`nestvirt libvirt nest DOMAIN\` (see \`nestvirt libvirt ls\`)`,
    );
  return L.join('\n') + '\n';
}
