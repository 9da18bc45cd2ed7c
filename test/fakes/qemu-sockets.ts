/**
 * FAKES of QEMU's two control sockets, for unit tests of the QMP and QGA
 * clients (the real ones are exercised by test/integration/vm*.test.ts).
 * They follow the wire protocols: QMP greets, requires qmp_capabilities,
 * echoes `id`, emits events; the guest agent answers guest-sync-delimited
 * with a 0xFF marker, and runs guest-exec through a scripted table.
 */
import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';

export interface FakeServer {
  path: string;
  server: Server;
  /** Every request document received, in order. */
  requests: Record<string, unknown>[];
  close(): Promise<void>;
}

async function listen(
  handler: (s: Socket, requests: Record<string, unknown>[]) => void,
): Promise<FakeServer> {
  const dir = await mkdtemp(join(tmpdir(), 'nv-fake-'));
  const path = join(dir, 'fake.sock');
  const requests: Record<string, unknown>[] = [];
  const sockets = new Set<Socket>();
  const server = createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
    handler(s, requests);
  });
  await new Promise<void>((r) => server.listen(path, r));
  return {
    path,
    server,
    requests,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

function onLines(s: Socket, fn: (doc: Record<string, unknown>, raw: string) => void): void {
  let buf = '';
  s.on('data', (b: Buffer) => {
    buf += b.toString('latin1');
    let i: number;
    while ((i = buf.indexOf('\n')) >= 0) {
      const raw = buf.slice(0, i);
      buf = buf.slice(i + 1);
      const line = raw.replace(/\xff/g, '').trim();
      if (!line) continue;
      try {
        fn(JSON.parse(line) as Record<string, unknown>, raw);
      } catch {
        s.write(
          JSON.stringify({ error: { class: 'GenericError', desc: 'JSON parse error' } }) + '\r\n',
        );
      }
    }
  });
}

export interface FakeQmpOptions {
  /** Replies per command: a return value, or an error, or a function. */
  commands?: Record<string, (args: Record<string, unknown> | undefined, s: Socket) => unknown>;
  /** Close the connection after the greeting (a QEMU going away). */
  dieAfterGreeting?: boolean;
  /**
   * Serve one client at a time, as QEMU's socket chardev does: later
   * connections wait in the queue, and each one taken up is greeted only
   * this many ms later (a QEMU whose main loop is slow).
   */
  slowSerialMs?: number;
}

/** A FAKE QMP server. `system_powerdown` emits POWERDOWN; `quit` closes. */
export function fakeQmp(opts: FakeQmpOptions = {}): Promise<FakeServer> {
  if (opts.slowSerialMs === undefined) return listen((s, requests) => serveQmp(s, requests, opts));
  const queue: Socket[] = [];
  let busy = false;
  const next = (requests: Record<string, unknown>[]): void => {
    if (busy) return;
    const s = queue.shift();
    if (!s) return;
    busy = true;
    setTimeout(() => {
      const release = (): void => {
        busy = false;
        next(requests);
      };
      if (s.destroyed) return release(); // the client gave up while queued
      s.once('close', release);
      serveQmp(s, requests, opts);
    }, opts.slowSerialMs);
  };
  return listen((s, requests) => {
    s.resume(); // notice a client that hangs up while queued
    queue.push(s);
    next(requests);
  });
}

function serveQmp(s: Socket, requests: Record<string, unknown>[], opts: FakeQmpOptions): void {
  {
    s.write(
      JSON.stringify({
        QMP: {
          version: { qemu: { micro: 0, minor: 2, major: 7 }, package: 'fake' },
          capabilities: ['oob'],
        },
      }) + '\r\n',
    );
    if (opts.dieAfterGreeting) return void s.end();
    let negotiated = false;
    onLines(s, (doc) => {
      requests.push(doc);
      const cmd = String(doc.execute);
      const id = doc.id !== undefined ? { id: doc.id } : {};
      const reply = (v: Record<string, unknown>): void =>
        void s.write(JSON.stringify({ ...v, ...id }) + '\r\n');
      if (cmd === 'qmp_capabilities') {
        negotiated = true;
        return reply({ return: {} });
      }
      if (!negotiated)
        return reply({
          error: {
            class: 'CommandNotFound',
            desc: "Expecting capabilities negotiation with 'qmp_capabilities'",
          },
        });
      const custom = opts.commands?.[cmd];
      if (custom)
        return reply({
          return: custom(doc.arguments as Record<string, unknown> | undefined, s) ?? {},
        });
      if (cmd === 'query-status') return reply({ return: { status: 'running', running: true } });
      if (cmd === 'system_powerdown') {
        reply({ return: {} });
        s.write(
          JSON.stringify({ event: 'POWERDOWN', timestamp: { seconds: 1, microseconds: 2 } }) +
            '\r\n',
        );
        return;
      }
      if (cmd === 'quit') {
        reply({ return: {} });
        s.end();
        return;
      }
      reply({ error: { class: 'CommandNotFound', desc: `The command ${cmd} has not been found` } });
    });
  }
}

export interface FakeExec {
  exitcode?: number;
  signal?: number;
  stdout?: string;
  stderr?: string;
  /** Number of guest-exec-status polls before it reports exited. */
  pollsUntilExit?: number;
}

export interface FakeQgaOptions {
  /** What each program does; unknown programs fail like qemu-ga does (ENOENT). */
  programs?: Record<string, (args: string[], input: Buffer | undefined) => FakeExec>;
  /** Bytes written on connect before anything else (stale replies of an earlier client). */
  staleOnConnect?: string;
  /** Behave like an old agent without guest-sync-delimited. */
  noDelimited?: boolean;
  /** Never answer anything (agent not running yet). */
  silent?: boolean;
}

/** A FAKE qemu-ga behind QEMU's chardev socket. */
export function fakeQga(opts: FakeQgaOptions = {}): Promise<FakeServer> {
  let nextPid = 100;
  const procs = new Map<number, FakeExec & { polls: number }>();
  return listen((s, requests) => {
    if (opts.staleOnConnect) s.write(opts.staleOnConnect);
    onLines(s, (doc) => {
      requests.push(doc);
      if (opts.silent) return;
      const args = (doc.arguments ?? {}) as Record<string, unknown>;
      const reply = (v: unknown): void => void s.write(JSON.stringify(v) + '\n');
      switch (doc.execute) {
        case 'guest-sync-delimited':
          if (opts.noDelimited)
            return reply({
              error: {
                class: 'CommandNotFound',
                desc: 'The command guest-sync-delimited has not been found',
              },
            });
          s.write(Buffer.from([0xff]));
          return reply({ return: args.id });
        case 'guest-sync':
          return reply({ return: args.id });
        case 'guest-ping':
          return reply({ return: {} });
        case 'guest-exec': {
          const path = String(args.path);
          const prog = opts.programs?.[path];
          if (!prog)
            return reply({
              error: {
                class: 'GenericError',
                desc: `Guest agent command failed, error was 'Failed to execute child process “${path}” (No such file or directory)'`,
              },
            });
          const input =
            typeof args['input-data'] === 'string'
              ? Buffer.from(args['input-data'], 'base64')
              : undefined;
          const r = prog((args.arg as string[]) ?? [], input);
          const pid = nextPid++;
          procs.set(pid, { ...r, polls: 0 });
          return reply({ return: { pid } });
        }
        case 'guest-exec-status': {
          const p = procs.get(Number(args.pid));
          if (!p) return reply({ error: { class: 'GenericError', desc: 'Invalid parameter pid' } });
          p.polls++;
          if (p.polls <= (p.pollsUntilExit ?? 0)) return reply({ return: { exited: false } });
          return reply({
            return: {
              exited: true,
              ...(p.signal !== undefined ? { signal: p.signal } : { exitcode: p.exitcode ?? 0 }),
              ...(p.stdout ? { 'out-data': Buffer.from(p.stdout).toString('base64') } : {}),
              ...(p.stderr ? { 'err-data': Buffer.from(p.stderr).toString('base64') } : {}),
            },
          });
        }
        default:
          return reply({
            error: {
              class: 'CommandNotFound',
              desc: `The command ${String(doc.execute)} has not been found`,
            },
          });
      }
    });
  });
}
