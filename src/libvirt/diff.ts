/**
 * A line-based unified diff (LCS), enough for domain XML documents of a few
 * hundred lines, with optional ANSI colour.
 */

type Op = { kind: ' ' | '-' | '+'; line: string; a: number; b: number };

function splitLines(s: string): string[] {
  if (s === '') return [];
  const lines = s.split('\n');
  if (lines[lines.length - 1] === '') lines.pop();
  else lines[lines.length - 1] += '\n\\ No newline at end of file';
  return lines;
}

function ops(a: string[], b: string[]): Op[] {
  // Trim the common prefix and suffix first: edits are small.
  let pre = 0;
  while (pre < a.length && pre < b.length && a[pre] === b[pre]) pre++;
  let suf = 0;
  while (
    suf < a.length - pre &&
    suf < b.length - pre &&
    a[a.length - 1 - suf] === b[b.length - 1 - suf]
  )
    suf++;
  const am = a.slice(pre, a.length - suf);
  const bm = b.slice(pre, b.length - suf);
  const n = am.length;
  const m = bm.length;
  const lcs: Uint32Array[] = Array.from({ length: n + 1 }, () => new Uint32Array(m + 1));
  for (let i = n - 1; i >= 0; i--)
    for (let j = m - 1; j >= 0; j--)
      lcs[i]![j] =
        am[i] === bm[j] ? lcs[i + 1]![j + 1]! + 1 : Math.max(lcs[i + 1]![j]!, lcs[i]![j + 1]!);
  const out: Op[] = [];
  for (let k = 0; k < pre; k++) out.push({ kind: ' ', line: a[k]!, a: k, b: k });
  let i = 0;
  let j = 0;
  while (i < n || j < m) {
    if (i < n && j < m && am[i] === bm[j]) {
      out.push({ kind: ' ', line: am[i]!, a: pre + i, b: pre + j });
      i++;
      j++;
    } else if (i < n && (j >= m || lcs[i + 1]![j]! >= lcs[i]![j + 1]!)) {
      out.push({ kind: '-', line: am[i]!, a: pre + i, b: pre + j });
      i++;
    } else {
      out.push({ kind: '+', line: bm[j]!, a: pre + i, b: pre + j });
      j++;
    }
  }
  for (let k = 0; k < suf; k++)
    out.push({
      kind: ' ',
      line: a[a.length - suf + k]!,
      a: a.length - suf + k,
      b: b.length - suf + k,
    });
  return out;
}

/** Counts of changed lines. */
export interface DiffStat {
  added: number;
  removed: number;
}

/** Unified diff of two texts ('' when equal), `context` lines around each change. */
export function unifiedDiff(
  before: string,
  after: string,
  labels: [string, string],
  context = 3,
): string {
  if (before === after) return '';
  const list = ops(splitLines(before), splitLines(after));
  const changed = list.map((o, idx) => (o.kind !== ' ' ? idx : -1)).filter((x) => x >= 0);
  const hunks: [number, number][] = [];
  for (const c of changed) {
    const s = Math.max(0, c - context);
    const e = Math.min(list.length - 1, c + context);
    const last = hunks[hunks.length - 1];
    if (last && s <= last[1] + 1) last[1] = Math.max(last[1], e);
    else hunks.push([s, e]);
  }
  const out = [`--- ${labels[0]}`, `+++ ${labels[1]}`];
  for (const [s, e] of hunks) {
    const part = list.slice(s, e + 1);
    const aLines = part.filter((o) => o.kind !== '+').length;
    const bLines = part.filter((o) => o.kind !== '-').length;
    const aStart = part[0]!.a + (aLines ? 1 : 0);
    const bStart = part[0]!.b + (bLines ? 1 : 0);
    out.push(`@@ -${aStart},${aLines} +${bStart},${bLines} @@`);
    for (const o of part) out.push(o.kind + o.line);
  }
  return out.join('\n') + '\n';
}

/** Number of added and removed lines between two texts. */
export function diffStat(before: string, after: string): DiffStat {
  const list = ops(splitLines(before), splitLines(after));
  return {
    added: list.filter((o) => o.kind === '+').length,
    removed: list.filter((o) => o.kind === '-').length,
  };
}

/** Colours a unified diff: headers bold, hunks cyan, removals red, additions green. */
export function colorDiff(diff: string, color: boolean): string {
  if (!color) return diff;
  return diff
    .split('\n')
    .map((l) => {
      if (l.startsWith('---') || l.startsWith('+++')) return `\x1b[1m${l}\x1b[0m`;
      if (l.startsWith('@@')) return `\x1b[36m${l}\x1b[0m`;
      if (l.startsWith('-')) return `\x1b[31m${l}\x1b[0m`;
      if (l.startsWith('+')) return `\x1b[32m${l}\x1b[0m`;
      return l;
    })
    .join('\n');
}
