/**
 * A small QMP client (QEMU Machine Protocol, docs/interop/qmp-spec in QEMU):
 * connect to the unix socket, read the greeting, negotiate with
 * `qmp_capabilities`, then `execute` commands (matched by id) and collect
 * asynchronous events.
 */
import { connect, type Socket } from 'node:net';
import { NestvirtError, ExitCode } from '../errors.js';

export interface QmpEvent {
  event: string;
  data?: Record<string, unknown>;
  timestamp?: { seconds: number; microseconds: number };
}

export interface QmpGreeting {
  QMP: {
    version: { qemu: { major: number; minor: number; micro: number }; package?: string };
    capabilities: string[];
  };
}

/** A QMP error response, e.g. { class: 'GenericError', desc: '...' }. */
export class QmpError extends NestvirtError {
  readonly errorClass: string;
  constructor(command: string, cls: string, desc: string) {
    super('vm.qmp-error', `QEMU refused ${command}: ${desc}`, { exitCode: ExitCode.INTERNAL });
    this.errorClass = cls;
  }
}

/** Opens a unix socket, failing after timeoutMs. */
export function connectUnix(path: string, timeoutMs: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect(path);
    const t = setTimeout(() => {
      s.destroy();
      reject(Object.assign(new Error(`timed out connecting to ${path}`), { code: 'ETIMEDOUT' }));
    }, timeoutMs);
    s.once('connect', () => {
      clearTimeout(t);
      resolve(s);
    });
    s.once('error', (e) => {
      clearTimeout(t);
      reject(e);
    });
  });
}

/**
 * Waits for a starting QEMU's QMP monitor to greet: true when it did, false
 * at the deadline. `check` runs before every attempt and throws to stop
 * (QEMU exited). While the socket is not there yet it retries every 20 ms;
 * once connected it waits for the greeting until the deadline. QEMU serves
 * one QMP client at a time, so a client that gives up and reconnects leaves
 * a dead connection queued ahead of its next one: with a 2 s patience, a
 * QEMU slower than that to start (a KVM guest's QEMU inside a busy TCG
 * guest) never reached a live client, and `run` failed after 60 s.
 */
export async function awaitQmp(
  path: string,
  o: { deadline: number; check: () => Promise<void> | void },
): Promise<boolean> {
  for (;;) {
    await o.check();
    try {
      const q = await QmpClient.connect(path, {
        timeoutMs: Math.max(2000, o.deadline - Date.now()),
      });
      q.close();
      return true;
    } catch {
      /* no socket yet, or closed before the greeting (QEMU exited: check says) */
    }
    if (Date.now() > o.deadline) return false;
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Splits a byte stream into JSON documents, one per line; garbage lines go to onJunk. */
export class JsonLines {
  private buf = '';
  constructor(
    private readonly onDoc: (doc: Record<string, unknown>) => void,
    private readonly onJunk: (line: string) => void = () => {},
  ) {}
  push(chunk: Buffer | string): void {
    // 0xFF is the guest agent's resync marker; it is never part of a document.
    this.buf += (typeof chunk === 'string' ? chunk : chunk.toString('latin1')).replace(
      /\xff/g,
      '\n',
    );
    let i: number;
    while ((i = this.buf.indexOf('\n')) >= 0) {
      const line = this.buf.slice(0, i).trim();
      this.buf = this.buf.slice(i + 1);
      if (!line) continue;
      let doc: unknown;
      try {
        doc = JSON.parse(Buffer.from(line, 'latin1').toString('utf8'));
      } catch {
        this.onJunk(line);
        continue;
      }
      if (doc && typeof doc === 'object') this.onDoc(doc as Record<string, unknown>);
      else this.onJunk(line);
    }
  }
}

interface Pending {
  command: string;
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

export class QmpClient {
  readonly greeting: QmpGreeting;
  readonly events: QmpEvent[] = [];
  private readonly pending = new Map<string, Pending>();
  private readonly waiters: { name: string; resolve: (e: QmpEvent) => void }[] = [];
  private nextId = 1;
  private closed = false;
  private closeWaiters: (() => void)[] = [];

  private constructor(
    private readonly sock: Socket,
    greeting: QmpGreeting,
  ) {
    this.greeting = greeting;
  }

  /** Connects, reads the greeting and negotiates capabilities. */
  static async connect(path: string, opts: { timeoutMs?: number } = {}): Promise<QmpClient> {
    const timeoutMs = opts.timeoutMs ?? 5000;
    const sock = await connectUnix(path, timeoutMs);
    let client: QmpClient | undefined;
    let onGreeting: ((g: QmpGreeting) => void) | undefined;
    const lines = new JsonLines((doc) => {
      if (client) client.onDoc(doc);
      else if ('QMP' in doc) onGreeting?.(doc as unknown as QmpGreeting);
    });
    sock.on('data', (b: Buffer) => lines.push(b));
    sock.on('error', () => {});
    const greeting = await new Promise<QmpGreeting>((resolve, reject) => {
      const t = setTimeout(() => {
        sock.destroy();
        reject(
          new NestvirtError('vm.qmp-timeout', `no QMP greeting on ${path} within ${timeoutMs} ms`),
        );
      }, timeoutMs);
      onGreeting = (g) => {
        clearTimeout(t);
        sock.removeListener('close', onEarlyClose);
        resolve(g);
      };
      const onEarlyClose = (): void => {
        clearTimeout(t);
        reject(new NestvirtError('vm.qmp-closed', `QMP socket ${path} closed before the greeting`));
      };
      sock.once('close', onEarlyClose);
    });
    client = new QmpClient(sock, greeting);
    const c = client;
    sock.on('close', () => c.onClose());
    await c.execute('qmp_capabilities', undefined, { timeoutMs });
    return c;
  }

  private onDoc(doc: Record<string, unknown>): void {
    if (typeof doc.event === 'string') {
      const ev = doc as unknown as QmpEvent;
      this.events.push(ev);
      for (let i = this.waiters.length - 1; i >= 0; i--)
        if (this.waiters[i]!.name === ev.event) this.waiters.splice(i, 1)[0]!.resolve(ev);
      return;
    }
    const id = typeof doc.id === 'string' ? doc.id : undefined;
    const p = id ? this.pending.get(id) : undefined;
    if (!p || !id) return;
    this.pending.delete(id);
    clearTimeout(p.timer);
    if ('error' in doc) {
      const e = doc.error as { class?: string; desc?: string };
      p.reject(new QmpError(p.command, e.class ?? 'GenericError', e.desc ?? 'unknown error'));
    } else p.resolve(doc.return);
  }

  private onClose(): void {
    this.closed = true;
    for (const [, p] of this.pending) {
      clearTimeout(p.timer);
      p.reject(
        new NestvirtError('vm.qmp-closed', `QEMU closed the QMP connection during ${p.command}`),
      );
    }
    this.pending.clear();
    for (const w of this.closeWaiters.splice(0)) w();
  }

  /** Runs a QMP command and returns its `return` value. */
  execute<T = unknown>(
    command: string,
    args?: Record<string, unknown>,
    opts: { timeoutMs?: number } = {},
  ): Promise<T> {
    if (this.closed)
      return Promise.reject(
        new NestvirtError('vm.qmp-closed', `QMP connection is closed (${command})`),
      );
    const id = `nv-${this.nextId++}`;
    const timeoutMs = opts.timeoutMs ?? 10_000;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(
          new NestvirtError(
            'vm.qmp-timeout',
            `QEMU did not answer ${command} within ${timeoutMs} ms`,
          ),
        );
      }, timeoutMs);
      this.pending.set(id, { command, resolve: resolve as (v: unknown) => void, reject, timer });
      this.sock.write(
        JSON.stringify({ execute: command, ...(args ? { arguments: args } : {}), id }) + '\n',
      );
    });
  }

  /** Resolves with the next event of that name (or one already received), or undefined on timeout. */
  waitEvent(name: string, timeoutMs: number): Promise<QmpEvent | undefined> {
    const seen = this.events.find((e) => e.event === name);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve) => {
      const w = {
        name,
        resolve: (e: QmpEvent) => {
          clearTimeout(t);
          resolve(e);
        },
      };
      const t = setTimeout(() => {
        const i = this.waiters.indexOf(w);
        if (i >= 0) this.waiters.splice(i, 1);
        resolve(undefined);
      }, timeoutMs);
      this.waiters.push(w);
    });
  }

  /** Resolves when QEMU closes the connection (it exited), or false on timeout. */
  waitClosed(timeoutMs: number): Promise<boolean> {
    if (this.closed) return Promise.resolve(true);
    return new Promise((resolve) => {
      const t = setTimeout(() => resolve(false), timeoutMs);
      this.closeWaiters.push(() => {
        clearTimeout(t);
        resolve(true);
      });
    });
  }

  get isClosed(): boolean {
    return this.closed;
  }

  close(): void {
    this.sock.destroy();
  }
}
