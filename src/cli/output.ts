/**
 * Output for humans (colour on a TTY, NO_COLOR respected) and for scripts
 * (`--json`: one JSON document on stdout, nothing else there).
 */
import type { Writable } from 'node:stream';

export interface Output {
  stdout: Writable;
  stderr: Writable;
  color: boolean;
  /** True when stderr is a TTY: live progress may redraw lines. */
  interactive: boolean;
}

export function makeOutput(
  stdout: Writable & { isTTY?: boolean } = process.stdout,
  stderr: Writable & { isTTY?: boolean } = process.stderr,
  env: NodeJS.ProcessEnv = process.env,
): Output {
  const color = !!stdout.isTTY && env.NO_COLOR === undefined && env.TERM !== 'dumb';
  return { stdout, stderr, color, interactive: !!stderr.isTTY && env.TERM !== 'dumb' };
}

const codes = {
  red: 31,
  green: 32,
  yellow: 33,
  blue: 34,
  magenta: 35,
  cyan: 36,
  gray: 90,
  bold: 1,
  dim: 2,
} as const;
export type Style = keyof typeof codes;

/** Wraps text in an ANSI style when colour is on. */
export function paint(out: Output, style: Style, text: string): string {
  return out.color ? `\x1b[${codes[style]}m${text}\x1b[0m` : text;
}

export function println(out: Output, text = ''): void {
  out.stdout.write(text + '\n');
}
export function eprintln(out: Output, text = ''): void {
  out.stderr.write(text + '\n');
}

/** Prints a value as the command's single JSON document. */
export function printJson(out: Output, value: unknown): void {
  out.stdout.write(JSON.stringify(value, null, 2) + '\n');
}

/** Renders rows as an aligned table (first row is the header). */
export function table(rows: string[][]): string {
  const widths: number[] = [];
  for (const r of rows)
    r.forEach((c, i) => (widths[i] = Math.max(widths[i] ?? 0, visibleLength(c))));
  return rows
    .map((r) =>
      r
        .map((c, i) =>
          i === r.length - 1 ? c : c + ' '.repeat((widths[i] ?? 0) - visibleLength(c)),
        )
        .join('  '),
    )
    .join('\n');
}

function visibleLength(s: string): number {
  // eslint-disable-next-line no-control-regex
  return s.replace(/\x1b\[[0-9;]*m/g, '').length;
}

/**
 * A live task list on stderr: `step(title)` starts a task, and the returned
 * handle ends it with its duration. On a non-TTY each change is one line.
 */
export class Progress {
  private readonly out: Output;
  private readonly quiet: boolean;
  constructor(out: Output, opts: { quiet?: boolean } = {}) {
    this.out = out;
    this.quiet = opts.quiet ?? false;
  }
  async step<T>(title: string, fn: (update: (detail: string) => void) => Promise<T>): Promise<T> {
    const t0 = performance.now();
    const write = (s: string): void => {
      if (!this.quiet) this.out.stderr.write(s);
    };
    let lastDetail = '';
    const update = (detail: string): void => {
      if (detail === lastDetail) return;
      lastDetail = detail;
      if (this.out.interactive)
        write(
          `\r\x1b[K${paint(this.out, 'cyan', '…')} ${title} ${paint(this.out, 'gray', detail)}`,
        );
    };
    if (this.out.interactive) write(`${paint(this.out, 'cyan', '…')} ${title}`);
    else write(`… ${title}\n`);
    try {
      const v = await fn(update);
      const secs = ((performance.now() - t0) / 1000).toFixed(1);
      write(
        `${this.out.interactive ? '\r\x1b[K' : ''}${paint(this.out, 'green', '✓')} ${title} ${paint(this.out, 'gray', `(${secs}s)`)}\n`,
      );
      return v;
    } catch (e) {
      const secs = ((performance.now() - t0) / 1000).toFixed(1);
      write(
        `${this.out.interactive ? '\r\x1b[K' : ''}${paint(this.out, 'red', '✗')} ${title} ${paint(this.out, 'gray', `(${secs}s)`)}\n`,
      );
      throw e;
    }
  }
}
