/**
 * Resumable HTTP(S) downloads into a `.part` file: a second attempt (in the
 * same command or a later one) asks for the rest with `Range: bytes=N-`
 * (guarded by `If-Range` with the first response's ETag/Last-Modified), and
 * appends on 206, restarts on 200. The decisions are pure functions
 * (`rangeRequest`, `planResponse`) tested by tables.
 */
import { createWriteStream } from 'node:fs';
import { readFile, stat, truncate, writeFile, rm } from 'node:fs/promises';
import { get as httpGet, type IncomingMessage } from 'node:http';
import { get as httpsGet } from 'node:https';
import { NestvirtError, NotPossibleError } from '../errors.js';

/** What we remember about a partial download (next to the .part file). */
export interface PartMeta {
  url: string;
  etag?: string;
  lastModified?: string;
  total?: number;
}

/** Request headers for fetching from byte `have` onwards. */
export function rangeRequest(have: number, meta: PartMeta | undefined): Record<string, string> {
  if (have <= 0) return {};
  const h: Record<string, string> = { range: `bytes=${have}-` };
  const validator = meta?.etag ?? meta?.lastModified;
  if (validator) h['if-range'] = validator;
  return h;
}

/** `Content-Range: bytes 100-199/200` → { start, end, total } (total null when `*`). */
export function parseContentRange(
  v: string | undefined,
): { start: number; end: number; total: number | null } | { unsatisfied: number } | undefined {
  if (!v) return undefined;
  const m = /^bytes\s+(\d+)-(\d+)\/(\d+|\*)$/i.exec(v.trim());
  if (m)
    return { start: Number(m[1]), end: Number(m[2]), total: m[3] === '*' ? null : Number(m[3]) };
  const u = /^bytes\s+\*\/(\d+)$/i.exec(v.trim());
  if (u) return { unsatisfied: Number(u[1]) };
  return undefined;
}

export type ResponsePlan =
  | { action: 'append'; total: number | null }
  | { action: 'restart'; total: number | null }
  | { action: 'complete'; total: number }
  | { action: 'redirect'; location: string }
  | { action: 'fail'; reason: string };

/** What to do with a response, given how many bytes the .part file already has. */
export function planResponse(
  status: number,
  headers: Record<string, string | string[] | undefined>,
  have: number,
): ResponsePlan {
  const h = (k: string): string | undefined => {
    const v = headers[k];
    return Array.isArray(v) ? v[0] : v;
  };
  if ([301, 302, 303, 307, 308].includes(status)) {
    const loc = h('location');
    return loc
      ? { action: 'redirect', location: loc }
      : { action: 'fail', reason: `HTTP ${status} without a Location` };
  }
  const len = h('content-length') === undefined ? null : Number(h('content-length'));
  if (status === 200) return { action: 'restart', total: len };
  if (status === 206) {
    const cr = parseContentRange(h('content-range'));
    if (!cr || 'unsatisfied' in cr)
      return { action: 'fail', reason: 'HTTP 206 without a usable Content-Range' };
    if (cr.start !== have)
      return { action: 'fail', reason: `server resumed at byte ${cr.start}, expected ${have}` };
    return { action: 'append', total: cr.total };
  }
  if (status === 416) {
    const cr = parseContentRange(h('content-range'));
    if (cr && 'unsatisfied' in cr && cr.unsatisfied === have)
      return { action: 'complete', total: have };
    return { action: 'restart', total: null };
  }
  return { action: 'fail', reason: `HTTP ${status}` };
}

export interface DownloadProgress {
  (done: number, total: number | null): void;
}

/** Downloads `url` into `part` (resuming), retrying interrupted transfers. Returns the size. */
export async function download(
  url: string,
  part: string,
  opts: { onProgress?: DownloadProgress; attempts?: number; timeoutMs?: number } = {},
): Promise<number> {
  const metaPath = part + '.json';
  const attempts = opts.attempts ?? 4;
  let lastErr: unknown;
  for (let i = 0; i < attempts; i++) {
    try {
      return await attempt(url, part, metaPath, opts);
    } catch (e) {
      lastErr = e;
      if (e instanceof NestvirtError) throw e; // a definite answer (404, bad range): no retry
      await new Promise((r) => setTimeout(r, 300 * (i + 1)));
    }
  }
  throw new NestvirtError(
    'image.download-interrupted',
    `download of ${url} was interrupted: ${(lastErr as Error)?.message ?? lastErr}`,
    {
      hint: 'run the same command again: the download resumes where it stopped',
      exitCode: 1,
      cause: lastErr,
    },
  );
}

async function attempt(
  url0: string,
  part: string,
  metaPath: string,
  opts: { onProgress?: DownloadProgress; timeoutMs?: number },
): Promise<number> {
  let meta = await readFile(metaPath, 'utf8')
    .then((t) => JSON.parse(t) as PartMeta)
    .catch(() => undefined);
  if (meta && meta.url !== url0) meta = undefined;
  let have = meta
    ? await stat(part)
        .then((s) => s.size)
        .catch(() => 0)
    : 0;
  if (!meta) await rm(part, { force: true });
  let url = url0;
  for (let hops = 0; hops < 6; hops++) {
    const res = await request(url, rangeRequest(have, meta), opts.timeoutMs ?? 60_000);
    const plan = planResponse(res.statusCode ?? 0, res.headers, have);
    if (plan.action === 'redirect') {
      res.resume();
      url = new URL(plan.location, url).toString();
      continue;
    }
    if (plan.action === 'fail') {
      res.resume();
      throw new NotPossibleError(
        'image.download-failed',
        `cannot download ${url0}: ${plan.reason}`,
        'check the URL (and that the server is reachable)',
      );
    }
    if (plan.action === 'complete') {
      res.resume();
      return have;
    }
    if (plan.action === 'restart') {
      have = 0;
      await truncate(part).catch(() => undefined);
    }
    const etag = res.headers.etag;
    const lastModified = res.headers['last-modified'];
    meta = {
      url: url0,
      ...(etag ? { etag } : {}),
      ...(lastModified ? { lastModified } : {}),
      ...(plan.total !== null ? { total: plan.total } : {}),
    };
    const total = plan.total;
    await writeFile(metaPath, JSON.stringify(meta));
    await new Promise<void>((resolve, reject) => {
      const out = createWriteStream(part, { flags: plan.action === 'append' ? 'a' : 'w' });
      let done = have;
      res.on('data', (b: Buffer) => {
        done += b.length;
        opts.onProgress?.(done, total);
      });
      res.on('aborted', () => reject(new Error('connection closed mid-transfer')));
      res.on('error', reject);
      out.on('error', reject);
      out.on('finish', () => resolve());
      res.pipe(out);
    });
    const size = (await stat(part)).size;
    if (total !== null && size !== total) throw new Error(`got ${size} of ${total} bytes`);
    return size;
  }
  throw new NotPossibleError(
    'image.download-failed',
    `cannot download ${url0}: too many redirects`,
  );
}

function request(
  url: string,
  headers: Record<string, string>,
  timeoutMs: number,
): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const get = u.protocol === 'https:' ? httpsGet : u.protocol === 'http:' ? httpGet : undefined;
    if (!get)
      return reject(
        new NestvirtError('image.bad-url', `unsupported URL scheme ${u.protocol}`, { exitCode: 2 }),
      );
    const req = get(u, { headers: { 'user-agent': 'nestvirt', ...headers } }, resolve);
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`no data for ${timeoutMs / 1000} s`)));
    req.on('error', reject);
  });
}

/** Formats a progress line: a bar on a TTY, percentage and bytes otherwise. */
export function progressText(done: number, total: number | null, bar: boolean, width = 24): string {
  const mib = (n: number): string => (n / (1 << 20)).toFixed(1);
  if (total === null || total <= 0) return `${mib(done)} MiB`;
  const frac = Math.min(1, done / total);
  const pct = `${Math.floor(frac * 100)}%`;
  if (!bar) return `${pct} (${mib(done)}/${mib(total)} MiB)`;
  const full = Math.round(frac * width);
  return `[${'#'.repeat(full)}${'-'.repeat(width - full)}] ${pct} ${mib(done)}/${mib(total)} MiB`;
}
