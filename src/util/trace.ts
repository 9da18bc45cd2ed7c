/**
 * Timing marks for finding where time goes: with NESTVIRT_TRACE=1 set, each
 * mark prints `trace <ms since the process started> <label>` on stderr.
 * Costs one boolean test when off.
 *
 *   NESTVIRT_TRACE=1 nestvirt run tiny --wait
 */
const on = Boolean(process.env.NESTVIRT_TRACE);

export function trace(label: string): void {
  if (on) process.stderr.write(`trace ${performance.now().toFixed(1)} ms ${label}\n`);
}
