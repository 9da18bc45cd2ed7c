/** Renders the demo's chain for people: a table plus a one-line diagram. */
import type { DemoResult } from './demo.js';
import { paint, table, type Output } from '../cli/output.js';

const runnerText: Record<string, string> = {
  'bare-metal': 'bare metal',
  kvm: 'KVM',
  tcg: 'QEMU TCG (emulation)',
  pvm: 'PVM',
  cloud: 'cloud VM',
  hypervisor: 'a hypervisor',
  unknown: 'unknown',
};

function lvl(level: number | null, relative: number): string {
  return level === null ? `+${relative}` : `L${level}`;
}
function secs(ms: number | null): string {
  return ms === null ? '—' : `${(ms / 1000).toFixed(1)}s`;
}

export function renderChain(out: Output, r: DemoResult): string {
  const rows = [['level', 'name', 'runs on', 'accel', 'ready']];
  for (const c of r.chain)
    rows.push([
      lvl(c.level, c.relative),
      c.name,
      runnerText[c.runner] ?? c.runner,
      c.accel ?? '—',
      secs(c.readyMs),
    ]);
  const diagram = r.chain
    .map((c) => `${lvl(c.level, c.relative)} ${c.role === 'host' ? runnerText[c.runner] : c.accel}`)
    .join(' → ');
  const lines = [table(rows), '', diagram];
  if (r.innermost)
    lines.push(
      `${paint(out, 'green', '✓')} the innermost VM reports ${r.innermost.level === null ? `relative level ${r.innermost.relative}` : `level ${r.innermost.level}`}, accelerator ${r.innermost.accel} (kernel saw hypervisor ${r.innermost.hypervisor}, clocksource ${r.innermost.clocksource})`,
    );
  if (r.toInnermostMs !== null)
    lines.push(`time to the innermost process: ${secs(r.toInnermostMs)}, total ${secs(r.totalMs)}`);
  return lines.join('\n') + '\n';
}

/** Renders a failed step: which level, why, the fix and the console tail. */
export function renderFailure(out: Output, r: DemoResult): string {
  const s = r.steps.find((x) => !x.ok);
  if (!s?.error) return '';
  const e = s.error;
  const where = e.level === null ? `level +${e.relative}` : `L${e.level}`;
  const lines = [`${paint(out, 'red', 'failed')} at ${where} (${s.title}): ${e.message}`];
  if (e.fix) lines.push(`  ${paint(out, 'yellow', 'fix:')} ${e.fix}`);
  if (e.console?.length)
    lines.push(`  last console lines of ${where}:`, ...e.console.map((l) => `    ${l}`));
  return lines.join('\n') + '\n';
}
