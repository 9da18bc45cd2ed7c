/**
 * doctor's human output: short, grouped (CPU / Machine / KVM / Verdict),
 * every failed check followed by its fix. Colour comes from output.ts.
 */
import { paint, type Output } from '../cli/output.js';
import type { DoctorReport } from './doctor.js';

const yes = (o: Output, s: string): string => paint(o, 'green', s);
const no = (o: Output, s: string): string => paint(o, 'red', s);
const warn = (o: Output, s: string): string => paint(o, 'yellow', s);

/** Renders the report as text lines. */
export function renderDoctor(r: DoctorReport, o: Output): string {
  const L: string[] = [];
  const head = (t: string): void => void L.push(paint(o, 'bold', t));
  const row = (k: string, v: string): void => void L.push(`  ${k.padEnd(11)} ${v}`);
  const c = r.cpu;
  const m = r.machine;
  const k = r.kvm;
  const v = r.verdict;

  head('CPU');
  row(
    'arch',
    `${c.arch}, ${c.vendor}${c.model ? ` (${c.model})` : ''}, ${c.count} CPU${c.count === 1 ? '' : 's'}`,
  );
  row('extension', c.extensions ? yes(o, c.extensions) : no(o, 'none'));
  if (c.arch === 'x86_64')
    row(
      '2nd-level',
      c.secondLevelPaging ? yes(o, c.secondLevelPaging) : warn(o, 'none (no EPT/NPT)'),
    );

  head('Machine');
  const lvl =
    r.level === null
      ? 'unknown'
      : `${r.level}${r.levelExact ? '' : r.level > 0 ? ' (at least)' : ''}${r.levelSource === 'chain' ? ` (from the nestvirt chain, ${r.chain?.source})` : ''}`;
  row('level', lvl);
  row(
    'kind',
    m.virtual === null
      ? 'unknown'
      : m.virtual
        ? `a VM under ${m.hypervisor ?? 'an unknown hypervisor'}${m.cloud ? ` in ${m.cloud}` : ''}`
        : `bare metal${m.cloud ? ` in ${m.cloud}` : ''}`,
  );
  if (m.product) row('product', m.product);
  if (r.chain)
    row('chain', r.chain.chain.map((h) => `${h.name}(L${h.level ?? '?'},${h.runner})`).join(' → '));

  head('KVM');
  row(
    'module',
    k.module
      ? `${k.module}${k.modules.find((x) => x.name === k.module)?.builtin ? ' (built in)' : ''}${k.pvmNotBinding ? no(o, ' — not binding: this kernel is a PVM guest') : ''}`
      : no(o, 'none loaded'),
  );
  row('nested', k.nested === null ? 'n/a' : k.nested ? yes(o, 'yes') : no(o, 'no'));
  row(
    '/dev/kvm',
    !k.device
      ? no(o, 'absent')
      : k.access
        ? k.access.readable && k.access.writable
          ? yes(o, `present, usable by ${k.access.user || k.access.uid}`)
          : no(o, `present, not usable by ${k.access.user || k.access.uid}`)
        : 'present',
  );
  if (k.probe)
    row(
      'probe',
      `${!k.probe.ran ? warn(o, 'not run') : k.probe.ok ? yes(o, 'ok') : no(o, 'failed')} — ${k.probe.detail}`,
    );
  if (r.tcg.probe)
    row(
      'tcg probe',
      `${!r.tcg.probe.ran ? warn(o, 'not run') : r.tcg.probe.ok ? yes(o, 'ok') : no(o, 'failed')} — ${r.tcg.probe.detail}`,
    );

  head('Verdict');
  row('VMs', v.acceleratedVMs ? yes(o, 'accelerated (KVM)') : no(o, 'no accelerated VMs'));
  row('nested VMs', v.acceleratedNestedVMs ? yes(o, 'accelerated') : no(o, 'not possible'));
  for (const p of v.problems) {
    L.push(`  ${p.severity === 'error' ? no(o, '✗') : warn(o, '!')} ${p.message}`);
    L.push(`    ${warn(o, 'fix:')} ${p.fix}`);
  }
  if (v.fallback) {
    const f = v.fallback;
    L.push(
      `  ${paint(o, 'cyan', '→')} instead: QEMU TCG -cpu max${f.works === true ? ' (probed: works)' : f.works === false ? ' (probe failed)' : ''}${f.nestedInGuest ? '; its guests see SVM and can run KVM themselves' : ''}`,
    );
    L.push(`    ${paint(o, 'gray', f.how)}`);
  }
  for (const n of v.notes) L.push(`  ${paint(o, 'gray', `note: ${n.text}`)}`);
  return L.join('\n') + '\n';
}
